// Device status field, virtio spec 1.2 section 2.1.

export const STATUS_ACKNOWLEDGE = 1;
export const STATUS_DRIVER = 2;
export const STATUS_DRIVER_OK = 4;
export const STATUS_FEATURES_OK = 8;
export const STATUS_DEVICE_NEEDS_RESET = 64;
export const STATUS_FAILED = 128;

const known =
  STATUS_ACKNOWLEDGE |
  STATUS_DRIVER |
  STATUS_DRIVER_OK |
  STATUS_FEATURES_OK |
  STATUS_DEVICE_NEEDS_RESET |
  STATUS_FAILED;

/**
 * The driver's initialization sequence (3.1.1) as a table of the status values it may write
 * next from each value. The driver sets bits one step at a time and never clears one except
 * by writing 0 (reset, 2.1.2). FAILED may be set at any time. NEEDS_RESET is the device's
 * bit: a driver write that keeps it set is accepted as long as the driver's bits are valid.
 */
const next: ReadonlyMap<number, readonly number[]> = new Map([
  [0, [STATUS_ACKNOWLEDGE]],
  [STATUS_ACKNOWLEDGE, [STATUS_ACKNOWLEDGE | STATUS_DRIVER]],
  [STATUS_ACKNOWLEDGE | STATUS_DRIVER, [STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK]],
  [
    STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
    [STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK],
  ],
  [STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK, []],
]);

/** Whether the driver may move the status from `from` to `to` (0 = reset is handled by the caller). */
export function isValidStatusTransition(from: number, to: number): boolean {
  if ((to & ~known) !== 0) return false;
  const driverFrom = from & ~(STATUS_DEVICE_NEEDS_RESET | STATUS_FAILED);
  const driverTo = to & ~(STATUS_DEVICE_NEEDS_RESET | STATUS_FAILED);
  if (to & STATUS_FAILED) return (driverTo & ~driverFrom) === 0; // giving up keeps what was set
  if (driverTo === driverFrom) return true; // rewriting the same bits (e.g. acknowledging NEEDS_RESET)
  return next.get(driverFrom)?.includes(driverTo) ?? false;
}

export function describeStatus(status: number): string {
  const names: string[] = [];
  if (status & STATUS_ACKNOWLEDGE) names.push('ACKNOWLEDGE');
  if (status & STATUS_DRIVER) names.push('DRIVER');
  if (status & STATUS_FEATURES_OK) names.push('FEATURES_OK');
  if (status & STATUS_DRIVER_OK) names.push('DRIVER_OK');
  if (status & STATUS_DEVICE_NEEDS_RESET) names.push('DEVICE_NEEDS_RESET');
  if (status & STATUS_FAILED) names.push('FAILED');
  return names.length === 0 ? 'RESET' : names.join('|');
}
