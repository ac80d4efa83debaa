import type { PciAddress } from '@xvio/xen';
import type { ControllerSnapshot, QueueSetup } from '../device-controller.js';
import { VirtioError } from '../virtio-errors.js';
import { MSIX_ENTRY_SIZE, PCI_CONFIG_SPACE_SIZE } from './pci-wire.js';

// The state of a virtio-pci function that a restarted backend needs to go on serving the same
// driver: what the driver wrote (configuration space, common configuration, MSI-X table) and
// what the device was doing (status, features, queue setups). It travels as JSON (bigints as
// hex strings) through a file or a xenstore node the backend owns; it is read back through
// `parsePciTransportState`, which checks every field, because a file is not to be trusted
// blindly either.

export const PCI_TRANSPORT_STATE_VERSION = 1;

/** Everything `PciTransport.restore` needs. */
export interface PciTransportState {
  readonly version: typeof PCI_TRANSPORT_STATE_VERSION;
  readonly pci: PciAddress;
  readonly deviceType: number;
  /** The 256 bytes of configuration space. */
  readonly config: Uint8Array;
  /** The MSI-X table, 16 bytes per vector. */
  readonly msixTable: Uint8Array;
  /** Vectors whose message is held pending (PCI 3.0 6.8.2.9). */
  readonly pendingVectors: readonly number[];
  readonly isr: number;
  readonly intxLevel: boolean;
  readonly intxWire: boolean;
  readonly deviceFeatureSelect: number;
  readonly driverFeatureSelect: number;
  readonly queueSelect: number;
  readonly configVector: number;
  readonly queueVectors: readonly number[];
  /** Where BAR 0 was claimed in Xen, if it was. */
  readonly barClaim: bigint | undefined;
  readonly controller: ControllerSnapshot;
}

const marker = Symbol.for('xvio.transport.pci-state-error');

export type PciStateErrorCode = 'invalid-state' | 'state-mismatch';

/** A saved state that is malformed, or that belongs to another function or device. */
export class PciStateError extends VirtioError {
  override readonly name = 'PciStateError';
  readonly [marker] = true;
  declare readonly code: PciStateErrorCode;

  constructor(code: PciStateErrorCode, message: string, options?: ErrorOptions) {
    super(code, `${code}: ${message}`, options);
  }

  static override isInstance(value: unknown): value is PciStateError {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[marker] === true;
  }
}

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');
const big = (value: bigint): string => `0x${value.toString(16)}`;

/** The state as a JSON text (bigints and byte arrays as hex). */
export function serializePciTransportState(state: PciTransportState): string {
  return JSON.stringify({
    ...state,
    config: hex(state.config),
    msixTable: hex(state.msixTable),
    barClaim: state.barClaim === undefined ? null : big(state.barClaim),
    controller: {
      ...state.controller,
      driverFeatures: big(state.controller.driverFeatures),
      queues: state.controller.queues.map((queue) => ({
        ...queue,
        desc: big(queue.desc),
        driver: big(queue.driver),
        device: big(queue.device),
      })),
    },
  });
}

function fail(message: string): never {
  throw new PciStateError('invalid-state', message);
}

function record(value: unknown, what: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(`${what} is not an object`);
  return value as Record<string, unknown>;
}

function integer(value: unknown, what: string, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > max)
    fail(`${what} is not an integer in 0..${max}`);
  return value;
}

function boolean(value: unknown, what: string): boolean {
  if (typeof value !== 'boolean') fail(`${what} is not a boolean`);
  return value;
}

function u64(value: unknown, what: string): bigint {
  if (typeof value !== 'string' || !/^0x[0-9a-f]{1,16}$/.test(value))
    fail(`${what} is not a 64-bit hex value`);
  return BigInt(value);
}

function bytes(value: unknown, what: string, length: number): Uint8Array {
  if (typeof value !== 'string' || value.length !== length * 2 || !/^[0-9a-f]*$/.test(value))
    fail(`${what} is not ${length} bytes of hex`);
  return new Uint8Array(Buffer.from(value, 'hex'));
}

function list<T>(value: unknown, what: string, max: number, item: (entry: unknown, at: string) => T): T[] {
  if (!Array.isArray(value) || value.length > max) fail(`${what} is not a list of at most ${max}`);
  return value.map((entry, index) => item(entry, `${what}[${index}]`));
}

function queueSetup(value: unknown, what: string): QueueSetup {
  const queue = record(value, what);
  return {
    size: integer(queue.size, `${what}.size`, 0x8000),
    desc: u64(queue.desc, `${what}.desc`),
    driver: u64(queue.driver, `${what}.driver`),
    device: u64(queue.device, `${what}.device`),
    ready: boolean(queue.ready, `${what}.ready`),
  };
}

/** Reads a state written by `serializePciTransportState`. Throws `PciStateError` naming the first bad field. */
export function parsePciTransportState(text: string): PciTransportState {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new PciStateError('invalid-state', 'not JSON', { cause: error });
  }
  const state = record(parsed, 'state');
  if (state.version !== PCI_TRANSPORT_STATE_VERSION) fail(`version ${String(state.version)} is not 1`);
  const pci = record(state.pci, 'pci');
  const msixLength = typeof state.msixTable === 'string' ? state.msixTable.length / 2 : -1;
  if (msixLength <= 0 || msixLength % MSIX_ENTRY_SIZE !== 0 || msixLength > 64 * MSIX_ENTRY_SIZE)
    fail('msixTable is not 1..64 entries');
  const controller = record(state.controller, 'controller');
  return {
    version: PCI_TRANSPORT_STATE_VERSION,
    pci: {
      segment: integer(pci.segment, 'pci.segment', 0xffff),
      bus: integer(pci.bus, 'pci.bus', 0xff),
      device: integer(pci.device, 'pci.device', 31),
      function: integer(pci.function, 'pci.function', 7),
    },
    deviceType: integer(state.deviceType, 'deviceType', 0xffff),
    config: bytes(state.config, 'config', PCI_CONFIG_SPACE_SIZE),
    msixTable: bytes(state.msixTable, 'msixTable', msixLength),
    pendingVectors: list(state.pendingVectors, 'pendingVectors', 64, (entry, at) => integer(entry, at, 63)),
    isr: integer(state.isr, 'isr', 0xff),
    intxLevel: boolean(state.intxLevel, 'intxLevel'),
    intxWire: boolean(state.intxWire, 'intxWire'),
    deviceFeatureSelect: integer(state.deviceFeatureSelect, 'deviceFeatureSelect', 0xffff_ffff),
    driverFeatureSelect: integer(state.driverFeatureSelect, 'driverFeatureSelect', 0xffff_ffff),
    queueSelect: integer(state.queueSelect, 'queueSelect', 0xffff),
    configVector: integer(state.configVector, 'configVector', 0xffff),
    queueVectors: list(state.queueVectors, 'queueVectors', 0x10000, (entry, at) =>
      integer(entry, at, 0xffff),
    ),
    barClaim: state.barClaim === null ? undefined : u64(state.barClaim, 'barClaim'),
    controller: {
      status: integer(controller.status, 'controller.status', 0xff),
      driverFeatures: u64(controller.driverFeatures, 'controller.driverFeatures'),
      generation: integer(controller.generation, 'controller.generation', 0xffff_ffff),
      queues: list(controller.queues, 'controller.queues', 0x10000, queueSetup),
    },
  };
}
