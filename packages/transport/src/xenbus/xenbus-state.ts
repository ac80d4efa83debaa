// XenbusState (xen/include/public/io/xenbus.h): the state each end of a split device
// publishes in its `state` node. Written as decimal strings.

export const XENBUS_STATE_UNKNOWN = 0;
export const XENBUS_STATE_INITIALISING = 1;
/** The backend is ready for the frontend's details (libxl's device add waits for it). */
export const XENBUS_STATE_INIT_WAIT = 2;
/** The frontend published its rings and event channels. */
export const XENBUS_STATE_INITIALISED = 3;
export const XENBUS_STATE_CONNECTED = 4;
/** The other end should close (device removal, or the driver unloads). */
export const XENBUS_STATE_CLOSING = 5;
export const XENBUS_STATE_CLOSED = 6;
export const XENBUS_STATE_RECONFIGURING = 7;
export const XENBUS_STATE_RECONFIGURED = 8;

export type XenbusState = 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8;

const names = [
  'Unknown',
  'Initialising',
  'InitWait',
  'Initialised',
  'Connected',
  'Closing',
  'Closed',
  'Reconfiguring',
  'Reconfigured',
] as const;

export function xenbusStateName(state: number): string {
  return names[state] ?? `invalid(${state})`;
}

/** Parses a `state` node; anything but a decimal 0..8 is Unknown (a hostile or torn value). */
export function parseXenbusState(value: string | undefined): XenbusState {
  if (value === undefined || !/^[0-8]$/.test(value.trim())) return XENBUS_STATE_UNKNOWN;
  return Number(value.trim()) as XenbusState;
}
