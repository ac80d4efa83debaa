import type { GuestMemory } from '@xvio/grant-pool';
import type { IoreqServer, XenStore, XenStoreWatch } from '@xvio/xen';
import type { VirtioDevice } from '../virtio-device.js';
import { VirtioError } from '../virtio-errors.js';
import { STATUS_DRIVER_OK } from '../virtio-status.js';
import {
  parseXenbusState,
  XENBUS_STATE_CLOSED,
  XENBUS_STATE_CLOSING,
  XENBUS_STATE_CONNECTED,
  XENBUS_STATE_INIT_WAIT,
} from '../xenbus/xenbus-state.js';
import type { InterruptRoute } from './mmio-interrupt.js';
import { MmioTransport } from './mmio-transport.js';
import { MMIO_WINDOW_SIZE } from './mmio-wire.js';

// What libxl writes for `virtio = ["type=virtio,device<N>, transport=mmio, ..."]`
// (tools/libs/light/libxl_virtio.c, libxl__set_xenstore_virtio): under the backend path
// `/local/domain/<backend>/backend/virtio/<domid>/<devid>/` the keys `irq` and `base`
// (decimal, "%u" / "%lu"), `type` (the device-tree compatible, "virtio,device" followed by
// the device id in hex) and `transport` ("mmio"), plus the generic device keys every libxl
// backend gets (`frontend`, `frontend-id`, `online`, `state`). The frontend side carries the
// same four keys; the guest's virtio-mmio driver does not read xenstore.

export const LIBXL_VIRTIO_KIND = 'virtio';
export const LIBXL_VIRTIO_TYPE_PREFIX = 'virtio,device';

const marker = Symbol.for('xvio.transport.libxl-device-error');

export type LibxlDeviceErrorCode = 'missing-key' | 'invalid-key' | 'unsupported-transport';

/** The toolstack's description of a device is unusable. The message names the key. */
export class LibxlDeviceError extends VirtioError {
  override readonly name = 'LibxlDeviceError';
  readonly [marker] = true;
  declare readonly code: LibxlDeviceErrorCode;

  constructor(code: LibxlDeviceErrorCode, message: string, options?: ErrorOptions) {
    super(code, `${code}: ${message}`, options);
  }

  static override isInstance(value: unknown): value is LibxlDeviceError {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[marker] === true;
  }
}

/** One virtio device libxl configured for a guest. */
export interface LibxlVirtioDevice {
  readonly frontendDomid: number;
  readonly devid: number;
  readonly backendPath: string;
  /** `frontend` key, when present. */
  readonly frontendPath: string | undefined;
  /** Guest-physical base of the MMIO window. */
  readonly base: bigint;
  /** The interrupt (an SPI on Arm). */
  readonly irq: number;
  /** The `type` string as written ("virtio,device1a"). */
  readonly type: string;
  /** The virtio device id parsed from `type`, or undefined for the generic "virtio,device". */
  readonly deviceId: number | undefined;
  readonly transport: 'mmio';
}

/** `/local/domain/<backend>/backend/virtio/<domid>/<devid>`. */
export function libxlBackendPath(backendDomid: number, frontendDomid: number, devid: number): string {
  return `/local/domain/${backendDomid}/backend/${LIBXL_VIRTIO_KIND}/${frontendDomid}/${devid}`;
}

function parseDecimal(value: string | undefined, key: string, path: string, max: bigint): bigint {
  if (value === undefined) throw new LibxlDeviceError('missing-key', `${path}/${key} is absent`);
  // libxl writes decimal; strtoul(…, 0) in libxl's reader also accepts 0x… hex.
  const text = value.trim();
  if (!/^(0x[0-9a-fA-F]{1,16}|[0-9]{1,20})$/.test(text)) {
    throw new LibxlDeviceError(
      'invalid-key',
      `${path}/${key} is not a number: ${JSON.stringify(value.slice(0, 32))}`,
    );
  }
  const number = BigInt(text);
  if (number > max) throw new LibxlDeviceError('invalid-key', `${path}/${key} is out of range: ${text}`);
  return number;
}

/** Reads and validates one device's backend node. */
export async function readLibxlVirtioDevice(
  store: XenStore,
  backendPath: string,
): Promise<LibxlVirtioDevice> {
  const parts = backendPath.split('/');
  const devid = Number(parts.at(-1));
  const frontendDomid = Number(parts.at(-2));
  if (!Number.isInteger(devid) || !Number.isInteger(frontendDomid)) {
    throw new LibxlDeviceError('invalid-key', `${backendPath} does not end in <domid>/<devid>`);
  }
  const [irq, base, type, transport, frontend] = await Promise.all(
    ['irq', 'base', 'type', 'transport', 'frontend'].map((key) => store.tryRead(`${backendPath}/${key}`)),
  );
  if ((transport ?? 'mmio') !== 'mmio') {
    throw new LibxlDeviceError(
      'unsupported-transport',
      `${backendPath}/transport is ${JSON.stringify(transport)}`,
    );
  }
  if (type === undefined) throw new LibxlDeviceError('missing-key', `${backendPath}/type is absent`);
  if (!type.startsWith(LIBXL_VIRTIO_TYPE_PREFIX)) {
    throw new LibxlDeviceError(
      'invalid-key',
      `${backendPath}/type is not virtio,device<id>: ${JSON.stringify(type.slice(0, 32))}`,
    );
  }
  const idText = type.slice(LIBXL_VIRTIO_TYPE_PREFIX.length);
  let deviceId: number | undefined;
  if (idText.length > 0) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(idText))
      throw new LibxlDeviceError('invalid-key', `${backendPath}/type has a bad device id`);
    deviceId = Number.parseInt(idText, 16);
  }
  const baseValue = parseDecimal(base, 'base', backendPath, (1n << 64n) - BigInt(MMIO_WINDOW_SIZE));
  if (baseValue % 0x200n !== 0n)
    throw new LibxlDeviceError('invalid-key', `${backendPath}/base is not 0x200-aligned`);
  return {
    frontendDomid,
    devid,
    backendPath,
    frontendPath: frontend,
    base: baseValue,
    irq: Number(parseDecimal(irq, 'irq', backendPath, 1019n)),
    type,
    deviceId,
    transport: 'mmio',
  };
}

/** Every virtio device libxl configured with this domain as backend. Malformed nodes are reported, not thrown. */
export async function listLibxlVirtioDevices(
  store: XenStore,
  backendDomid: number,
): Promise<{ devices: LibxlVirtioDevice[]; errors: LibxlDeviceError[] }> {
  const root = `/local/domain/${backendDomid}/backend/${LIBXL_VIRTIO_KIND}`;
  const devices: LibxlVirtioDevice[] = [];
  const errors: LibxlDeviceError[] = [];
  const domids = (await store.exists(root)) ? await store.directory(root) : [];
  for (const domid of domids) {
    const devids = await store.directory(`${root}/${domid}`).catch(() => [] as string[]);
    for (const devid of devids) {
      try {
        devices.push(await readLibxlVirtioDevice(store, `${root}/${domid}/${devid}`));
      } catch (error) {
        if (LibxlDeviceError.isInstance(error)) errors.push(error);
        else throw error;
      }
    }
  }
  return { devices, errors };
}

/**
 * The backend's half of libxl's device protocol for virtio-mmio: `state` goes to InitWait as
 * soon as we serve the window (libxl's device add waits for it and fails the domain creation
 * after its timeout), Connected once the guest driver set DRIVER_OK (informational: the
 * guest does not read xenstore), and Closed when we stop. When the toolstack removes the
 * device it writes `online` 0 and `state` Closing; `onRemove` is called then.
 */
export class LibxlBackendNode {
  private watch: XenStoreWatch | undefined;
  private closed = false;

  constructor(
    private readonly store: XenStore,
    readonly device: LibxlVirtioDevice,
  ) {}

  async initWait(onRemove: () => void): Promise<void> {
    await this.store.write(`${this.device.backendPath}/state`, String(XENBUS_STATE_INIT_WAIT));
    this.watch = await this.store.watch(`${this.device.backendPath}/state`, {
      onEvent: () => {
        void this.store
          .tryRead(`${this.device.backendPath}/state`)
          .then((state) => {
            if (!this.closed && parseXenbusState(state) === XENBUS_STATE_CLOSING) onRemove();
          })
          .catch(() => undefined);
      },
    });
  }

  async connected(): Promise<void> {
    if (this.closed) return;
    await this.store.write(`${this.device.backendPath}/state`, String(XENBUS_STATE_CONNECTED));
  }

  /** Writes Closed. Idempotent; a backend node the toolstack already removed is fine. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.watch?.close();
    if (await this.store.exists(this.device.backendPath)) {
      await this.store.write(`${this.device.backendPath}/state`, String(XENBUS_STATE_CLOSED));
    }
  }
}

export interface LibxlMmioDeviceOptions {
  readonly store: XenStore;
  readonly server: IoreqServer;
  readonly descriptor: LibxlVirtioDevice;
  readonly device: VirtioDevice;
  readonly memory: GuestMemory;
  /** Default: the SPI libxl chose (`irq`), for an Arm guest. x86 guests name their route. */
  readonly interrupt?: InterruptRoute;
  readonly platformFeatures?: bigint;
  readonly onError?: (error: unknown) => void;
  /** The toolstack removed the device (state Closing): called after we closed. */
  readonly onRemoved?: () => void;
}

/**
 * A virtio-mmio device as libxl configured it: the window at `base`, the SPI `irq`, and the
 * backend node's states (InitWait on start, Connected once the guest driver set DRIVER_OK,
 * Closed on removal or close).
 */
export class LibxlMmioDevice {
  readonly transport: MmioTransport;
  readonly node: LibxlBackendNode;

  private constructor(options: LibxlMmioDeviceOptions) {
    const descriptor = options.descriptor;
    if (descriptor.deviceId !== undefined && descriptor.deviceId !== options.device.deviceType) {
      throw new LibxlDeviceError(
        'invalid-key',
        `${descriptor.backendPath}/type names device ${descriptor.deviceId}, the backend serves ${options.device.deviceType}`,
      );
    }
    this.node = new LibxlBackendNode(options.store, descriptor);
    let connected = false;
    this.transport = new MmioTransport({
      server: options.server,
      device: options.device,
      memory: options.memory,
      base: descriptor.base,
      interrupt: options.interrupt ?? { kind: 'spi', irq: descriptor.irq },
      ...(options.platformFeatures !== undefined ? { platformFeatures: options.platformFeatures } : {}),
      ...(options.onError ? { onError: options.onError } : {}),
      onStatus: (status) => {
        if (!connected && status & STATUS_DRIVER_OK) {
          connected = true;
          void this.node.connected().catch((error: unknown) => options.onError?.(error));
        }
        if (status === 0) connected = false;
      },
    });
  }

  /** Claims the window and reports InitWait. */
  static async start(options: LibxlMmioDeviceOptions): Promise<LibxlMmioDevice> {
    const served = new LibxlMmioDevice(options);
    await served.node.initWait(() => {
      void served.close().then(() => options.onRemoved?.(), options.onError);
    });
    return served;
  }

  /** Releases the window and writes Closed. Idempotent. */
  async close(): Promise<void> {
    this.transport.close();
    await this.node.close();
  }
}
