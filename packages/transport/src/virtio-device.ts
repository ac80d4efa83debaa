import type { GuestMemory } from '@xvio/grant-pool';
import type { Virtqueue } from './virtqueue.js';

/**
 * What a device gets when the driver sets DRIVER_OK: the memory to reach buffers through,
 * the negotiated features and the queues the driver enabled. Valid until `reset`.
 */
export interface DeviceContext {
  readonly memory: GuestMemory;
  /** Features both sides agreed on (spec 2.2). */
  readonly features: bigint;
  /** One entry per queue; `undefined` for a queue the driver left disabled. */
  readonly queues: readonly (Virtqueue | undefined)[];
  /** Sends a used-buffer notification for a queue (the transport picks MSI-X, INTx or an event channel). */
  interrupt(queueIndex: number): void;
  /** Bumps the config generation and sends a configuration change notification (spec 2.5.1). */
  configChanged(): void;
  /**
   * Reports that the driver corrupted the device's state (a broken ring, a forbidden access):
   * the device stops, DEVICE_NEEDS_RESET is set and the driver is told (spec 2.1.2). Counted.
   */
  fail(error: unknown): void;
  /** Aborted when the device is reset or the driver goes away; long-running work stops on it. */
  readonly signal: AbortSignal;
}

/**
 * The contract every xvio device implements, independent of transport. A device never
 * imports a transport or the hypervisor: it sees guest memory and queues only through
 * the context it is given.
 */
export interface VirtioDevice {
  /** Device ID (spec 5: 1 net, 3 console, 4 entropy, 16 gpu, ...). */
  readonly deviceType: number;
  /** A short name for logs and metrics (e.g. `rng0`). */
  readonly name: string;
  /** Maximum size of each queue; the number of entries is the number of queues. */
  readonly queueMaxSizes: readonly number[];
  /** Features the device offers: its own bits plus the ring features it supports. */
  readonly features: bigint;
  /** Bytes of device configuration space. */
  readonly configSize: number;
  /** Reads configuration space; offset and length are already checked against `configSize`. */
  readConfig(offset: number, target: Uint8Array): void;
  /** Driver writes to configuration space (most fields are read-only: ignore those). */
  writeConfig(offset: number, source: Uint8Array): void;
  /**
   * Whether the device can work with the features the driver accepted (spec 3.1.1 step 5:
   * the device may refuse FEATURES_OK). Default: accept.
   */
  acceptFeatures?(features: bigint): boolean;
  /** Starts the device. Throwing marks it NEEDS_RESET (activation failed). */
  activate(context: DeviceContext): void;
  /** The driver made buffers available on a queue (a kick). */
  notify(queueIndex: number): void;
  /** Stops all work and forgets all guest state: in-flight requests are dropped (spec 2.1.2 reset). */
  reset(): void;
  /** Device counters for metrics: flat names, numeric values. */
  metrics?(): Readonly<Record<string, number>>;
}
