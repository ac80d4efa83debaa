// The pattern the guest's /init draws on /dev/fb0 (guest-init.sh, gpu_case), and how the
// tests compare a picture with it.

/** Block columns and rows of the pattern. */
export const PATTERN_COLUMNS = 8;
export const PATTERN_ROWS = 4;

/** Blue of every block unless the host chooses it (`xvio.askblue=1`). */
export const PATTERN_BLUE = 0xc0;

/** The colour of the block a pixel lies in: R=32c+16, G=64r+32, B=`blue`; the last column/row takes the remainder. */
export function patternColour(
  x: number,
  y: number,
  width: number,
  height: number,
  blue = PATTERN_BLUE,
): [red: number, green: number, blue: number] {
  const column = Math.min(PATTERN_COLUMNS - 1, Math.floor(x / Math.floor(width / PATTERN_COLUMNS)));
  const row = Math.min(PATTERN_ROWS - 1, Math.floor(y / Math.floor(height / PATTERN_ROWS)));
  return [32 * column + 16, 64 * row + 32, blue];
}

export interface PatternMatch {
  /** Pixels that differ from the pattern. */
  wrong: number;
  /** The first wrong pixel, for the failure message. */
  first?: { x: number; y: number; got: number[]; want: number[] };
}

/** Compares every pixel of a picture (`channels` bytes a pixel: 4 for RGBA, 3 for RGB) with the pattern. */
export function comparePattern(
  picture: {
    width: number;
    height: number;
    pixels: Uint8Array;
    channels: 3 | 4;
  },
  blue = PATTERN_BLUE,
): PatternMatch {
  const { width, height, pixels, channels } = picture;
  const match: PatternMatch = { wrong: 0 };
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const at = (y * width + x) * channels;
      const want = patternColour(x, y, width, height, blue);
      const got = [pixels[at]!, pixels[at + 1]!, pixels[at + 2]!];
      if (got[0] !== want[0] || got[1] !== want[1] || got[2] !== want[2]) {
        match.wrong++;
        match.first ??= { x, y, got, want };
      }
    }
  }
  return match;
}

/** A binary PPM (P6, maxval 255) as QEMU's `screendump` writes it. */
export function decodePpm(file: Uint8Array): { width: number; height: number; rgb: Uint8Array } {
  // Header: "P6", width, height, maxval, separated by whitespace, then one whitespace byte.
  const fields: string[] = [];
  let at = 0;
  while (fields.length < 4) {
    while (at < file.length && /\s/.test(String.fromCharCode(file[at]!))) at++;
    let field = '';
    while (at < file.length && !/\s/.test(String.fromCharCode(file[at]!)))
      field += String.fromCharCode(file[at++]!);
    if (field === '') throw new Error('truncated PPM header');
    fields.push(field);
  }
  at++;
  const [magic, width, height, maxval] = [fields[0], Number(fields[1]), Number(fields[2]), Number(fields[3])];
  if (magic !== 'P6' || maxval !== 255) throw new Error(`not an 8-bit P6 PPM (${fields.join(' ')})`);
  const rgb = file.subarray(at, at + width * height * 3);
  if (rgb.length !== width * height * 3) throw new Error('truncated PPM data');
  return { width, height, rgb };
}
