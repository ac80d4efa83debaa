import type { GpuRect } from './gpu-wire.js';

/** A scanout's current picture as the host may read it. */
export interface GpuFrame {
  readonly width: number;
  readonly height: number;
  /** Copies a rectangle of the frame as RGBA (row-major, 4 bytes per pixel). */
  readRgba(rect: GpuRect): Uint8Array;
}

export interface GpuCursor {
  /** 64x64 RGBA image. */
  readonly rgba: Uint8Array;
  readonly hotX: number;
  readonly hotY: number;
}

/**
 * Where a gpu device's output goes: a browser viewer, a window, nothing. Calls are
 * synchronous. A `frame` reads the resource live: it stays valid until the next
 * `scanoutChanged` for that scanout, so a host may read damage later than the flush.
 */
export interface GpuHost {
  /** A scanout was enabled (with its frame) or disabled (`undefined`). */
  scanoutChanged(scanoutId: number, frame: GpuFrame | undefined): void;
  /** The guest flushed `damage` (scanout coordinates) of a scanout. */
  flush(scanoutId: number, frame: GpuFrame, damage: GpuRect): void;
  /** The cursor image changed (`undefined`: hidden). */
  cursorChanged(scanoutId: number, cursor: GpuCursor | undefined, x: number, y: number): void;
  /** The cursor moved. */
  cursorMoved(scanoutId: number, x: number, y: number): void;
}

/** A host that shows nothing but keeps the counts: for servers without a display. */
export class NullGpuHost implements GpuHost {
  flushes = 0;
  damagePixels = 0;
  cursorEvents = 0;

  scanoutChanged(): void {}

  flush(_scanoutId: number, _frame: GpuFrame, damage: GpuRect): void {
    this.flushes++;
    this.damagePixels += damage.width * damage.height;
  }

  cursorChanged(): void {
    this.cursorEvents++;
  }

  cursorMoved(): void {
    this.cursorEvents++;
  }
}

/** Sends every event to several hosts (e.g. a viewer and a recorder). */
export class FanOutGpuHost implements GpuHost {
  constructor(private readonly hosts: readonly GpuHost[]) {}

  scanoutChanged(scanoutId: number, frame: GpuFrame | undefined): void {
    for (const host of this.hosts) host.scanoutChanged(scanoutId, frame);
  }

  flush(scanoutId: number, frame: GpuFrame, damage: GpuRect): void {
    for (const host of this.hosts) host.flush(scanoutId, frame, damage);
  }

  cursorChanged(scanoutId: number, cursor: GpuCursor | undefined, x: number, y: number): void {
    for (const host of this.hosts) host.cursorChanged(scanoutId, cursor, x, y);
  }

  cursorMoved(scanoutId: number, x: number, y: number): void {
    for (const host of this.hosts) host.cursorMoved(scanoutId, x, y);
  }
}
