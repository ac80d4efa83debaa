import { describe, expect, it } from 'vitest';
import {
  LIBXL_VIRTIO_MMIO_SPI_LAST,
  libxlMmioSlot,
  MMIO_CONFIG,
  MMIO_CONFIG_GENERATION,
  MMIO_WINDOW_SIZE,
} from './mmio-wire.js';

describe('virtio-mmio layout', () => {
  it('places devices as libxl on Arm does: 0x02000000 + 0x200 * n, SPIs 33..43', () => {
    expect(libxlMmioSlot(0)).toEqual({ base: 0x0200_0000n, irq: 33 });
    expect(libxlMmioSlot(3)).toEqual({ base: 0x0200_0600n, irq: 36 });
    expect(libxlMmioSlot(10)).toEqual({ base: 0x0200_1400n, irq: LIBXL_VIRTIO_MMIO_SPI_LAST });
    expect(libxlMmioSlot(11)).toBeUndefined();
    expect(libxlMmioSlot(-1)).toBeUndefined();
  });

  it('keeps ConfigGeneration just below the configuration space', () => {
    expect(MMIO_CONFIG_GENERATION + 4).toBe(MMIO_CONFIG);
    expect(MMIO_WINDOW_SIZE).toBe(0x200);
  });
});
