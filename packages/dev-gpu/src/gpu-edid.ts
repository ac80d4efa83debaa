// A VESA EDID 1.4 base block (128 bytes) describing one virtual monitor whose preferred
// (and only detailed) mode is the scanout's size at 60 Hz. Linux's drm_edid parser and
// `edid-decode` accept it; the virtio-gpu driver reads it with GET_EDID (5.7.6.8).

const HEADER = [0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00];
/** sRGB primaries and white point, EDID's 10-bit chromaticity encoding (bytes 25..34). */
const SRGB_CHROMATICITY = [0xee, 0x91, 0xa3, 0x54, 0x4c, 0x99, 0x26, 0x0f, 0x50, 0x54];
/** Reduced blanking, close to CVT-RB: enough for a virtual display, small pixel clock. */
const H_BLANK = 160;
const H_SYNC_OFFSET = 48;
const H_SYNC_WIDTH = 32;
const V_BLANK = 23;
const V_SYNC_OFFSET = 3;
const V_SYNC_WIDTH = 5;
const REFRESH_HZ = 60;
/** Assumed pixel density for the physical size fields: 96 dpi. */
const MM_PER_PIXEL = 25.4 / 96;

export const EDID_MAX_WIDTH = 4095; // 12-bit fields of the detailed timing descriptor
export const EDID_MAX_HEIGHT = 4095;

export interface EdidOptions {
  width: number;
  height: number;
  /** Monitor name, at most 13 ASCII characters. */
  name?: string;
  serial?: number;
}

export function createEdid(options: EdidOptions): Uint8Array {
  const { width, height } = options;
  if (!Number.isInteger(width) || width < 1 || width > EDID_MAX_WIDTH)
    throw new RangeError(`edid width ${width} out of range`);
  if (!Number.isInteger(height) || height < 1 || height > EDID_MAX_HEIGHT)
    throw new RangeError(`edid height ${height} out of range`);
  const edid = new Uint8Array(128);
  edid.set(HEADER, 0);
  // Manufacturer "XVO": three 5-bit letters (A = 1), big-endian.
  const letters = 'XVO'.split('').map((c) => c.charCodeAt(0) - 64);
  const manufacturer = (letters[0]! << 10) | (letters[1]! << 5) | letters[2]!;
  edid[8] = manufacturer >> 8;
  edid[9] = manufacturer & 0xff;
  edid[10] = 0x01; // product code, little-endian
  edid[11] = 0x00;
  new DataView(edid.buffer).setUint32(12, options.serial ?? 0, true);
  edid[16] = 1; // week of manufacture
  edid[17] = 2026 - 1990;
  edid[18] = 1; // EDID 1.4
  edid[19] = 4;
  edid[20] = 0xa5; // digital input, 8 bits per colour, DisplayPort
  const widthMm = Math.round(width * MM_PER_PIXEL);
  const heightMm = Math.round(height * MM_PER_PIXEL);
  edid[21] = Math.min(255, Math.max(1, Math.round(widthMm / 10)));
  edid[22] = Math.min(255, Math.max(1, Math.round(heightMm / 10)));
  edid[23] = 120; // gamma 2.2 = (120 + 100) / 100
  edid[24] = 0x06; // sRGB default colour space; preferred timing is the native mode; RGB 4:4:4
  edid.set(SRGB_CHROMATICITY, 25);
  // Bytes 35..37: no established timings. 38..53: unused standard timings (0x01 0x01).
  for (let i = 38; i < 54; i++) edid[i] = 0x01;
  writeDetailedTiming(edid, 54, width, height, widthMm, heightMm);
  writeTextDescriptor(edid, 72, 0xfc, (options.name ?? 'xvio virtual').slice(0, 13));
  writeRangeLimits(edid, 90, width, height);
  writeTextDescriptor(edid, 108, 0xff, String(options.serial ?? 0).slice(0, 13));
  edid[126] = 0; // no extension blocks
  edid[127] = checksum(edid);
  return edid;
}

function writeDetailedTiming(
  edid: Uint8Array,
  at: number,
  width: number,
  height: number,
  widthMm: number,
  heightMm: number,
): void {
  const pixelClock10kHz = Math.ceil(((width + H_BLANK) * (height + V_BLANK) * REFRESH_HZ) / 10_000);
  edid[at] = pixelClock10kHz & 0xff;
  edid[at + 1] = pixelClock10kHz >> 8;
  edid[at + 2] = width & 0xff;
  edid[at + 3] = H_BLANK & 0xff;
  edid[at + 4] = ((width >> 8) << 4) | (H_BLANK >> 8);
  edid[at + 5] = height & 0xff;
  edid[at + 6] = V_BLANK & 0xff;
  edid[at + 7] = ((height >> 8) << 4) | (V_BLANK >> 8);
  edid[at + 8] = H_SYNC_OFFSET & 0xff;
  edid[at + 9] = H_SYNC_WIDTH & 0xff;
  edid[at + 10] = ((V_SYNC_OFFSET & 0xf) << 4) | (V_SYNC_WIDTH & 0xf);
  edid[at + 11] =
    ((H_SYNC_OFFSET >> 8) << 6) |
    ((H_SYNC_WIDTH >> 8) << 4) |
    ((V_SYNC_OFFSET >> 4) << 2) |
    (V_SYNC_WIDTH >> 4);
  edid[at + 12] = widthMm & 0xff;
  edid[at + 13] = heightMm & 0xff;
  edid[at + 14] = ((widthMm >> 8) << 4) | (heightMm >> 8);
  edid[at + 15] = 0; // borders
  edid[at + 16] = 0;
  edid[at + 17] = 0x1e; // digital separate sync, +hsync, +vsync, not interlaced
}

function writeTextDescriptor(edid: Uint8Array, at: number, tag: number, text: string): void {
  edid[at + 3] = tag;
  const bytes = Array.from(text, (c) => (c.charCodeAt(0) < 0x7f ? c.charCodeAt(0) : 0x3f));
  for (let i = 0; i < 13; i++)
    edid[at + 5 + i] = i < bytes.length ? bytes[i]! : i === bytes.length ? 0x0a : 0x20;
}

function writeRangeLimits(edid: Uint8Array, at: number, width: number, height: number): void {
  const pixelClockMHz = ((width + H_BLANK) * (height + V_BLANK) * REFRESH_HZ) / 1e6;
  const lineKHz = ((height + V_BLANK) * REFRESH_HZ) / 1000;
  edid[at + 3] = 0xfd;
  edid[at + 5] = 50; // min vertical Hz
  edid[at + 6] = 75; // max vertical Hz
  edid[at + 7] = Math.max(1, Math.floor(lineKHz * 0.5)); // min horizontal kHz
  edid[at + 8] = Math.min(255, Math.ceil(lineKHz * 1.5)); // max horizontal kHz
  edid[at + 9] = Math.min(255, Math.ceil((pixelClockMHz * 1.5) / 10)); // max pixel clock, 10 MHz units
  edid[at + 10] = 0x01; // range limits only, no timing formula
  edid[at + 11] = 0x0a;
  for (let i = 12; i < 18; i++) edid[at + i] = 0x20;
}

function checksum(edid: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < 127; i++) sum += edid[i]!;
  return (256 - (sum & 0xff)) & 0xff;
}
