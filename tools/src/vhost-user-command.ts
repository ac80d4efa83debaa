import { resolve } from 'node:path';
import type { GuestMemory } from '@xvio/grant-pool';
import type { VirtioDevice, Virtqueue } from '@xvio/transport';
import { InvalidArgumentError } from 'commander';
import type { Logger } from 'pino';
import type { CommandModule } from './cli-context.js';
import { CliError, describeError } from './cli-errors.js';
import { deviceLogger } from './cli-logger.js';
import { collectSetting } from './device-options.js';
import { DEVICE_NAMES, type DeviceName, isDeviceName } from './device-registry.js';
import { type MetricSource, serveMetrics, XvioMetrics } from './metrics-registry.js';
import { loadOptionalModule } from './optional-modules.js';
import { parseIntegerOption } from './run-command.js';
import { loadXenModule, requireNativeXen } from './xen-services.js';

/** What the CLI needs of `@xvio/transport/vhost-user` (kept structural: the module is loaded lazily). */
interface VhostUserServer {
  readonly socketPath: string;
  readonly connections: number;
  readonly backend:
    | {
        readonly device: VirtioDevice;
        readonly memory: GuestMemory;
        runningQueue(index: number): Virtqueue | undefined;
        readonly metrics: Readonly<Record<string, number>>;
      }
    | undefined;
  metrics(): Readonly<Record<string, number>>;
  on(event: 'connect' | 'close', listener: () => void): unknown;
  on(event: 'disconnect', listener: (end: { reason: string; error?: Error }) => void): unknown;
  close(): Promise<void>;
}

/** What the CLI needs of `@xvio/dev-net`'s `NetPort` (structural: device packages load lazily). */
interface NetPortLike {
  createDevice(): VirtioDevice;
  close(): Promise<void>;
}

interface VhostUserModule {
  createXenRegionMapper?(options: { foreignMemory?: unknown; grants?: unknown }): unknown;
  serveVhostUser(options: {
    socketPath: string;
    device: () => VirtioDevice;
    once?: boolean;
    xenMapper?: unknown;
    offerXenMmap?: boolean;
    pollUs?: number;
    log?: {
      debug?(message: string): void;
      info(message: string): void;
      warn(message: string): void;
      error(message: string): void;
    };
  }): VhostUserServer;
}

/** The vhost-user backend, loaded on first use. */
export async function loadVhostUser(): Promise<VhostUserModule> {
  const module = (await loadOptionalModule('vhost-user')) as Partial<VhostUserModule>;
  if (typeof module.serveVhostUser !== 'function') {
    throw new CliError(
      'feature-unavailable',
      'the vhost-user backend is not available in this build (@xvio/transport/vhost-user exports no serveVhostUser)',
    );
  }
  return module as VhostUserModule;
}

function adaptLogger(log: Logger) {
  return {
    debug: (message: string) => log.debug(message),
    info: (message: string) => log.info(message),
    warn: (message: string) => log.warn(message),
    error: (message: string) => log.error(message),
  };
}

/** Metrics of one socket: the device of its current connection, if any. */
function vhostUserSource(server: VhostUserServer): MetricSource {
  return {
    domain: `vhost-user:${server.socketPath}`,
    device: () => server.backend?.device,
    queues: () => {
      const backend = server.backend;
      if (!backend) return [];
      return backend.device.queueMaxSizes.map((_, index) => backend.runningQueue(index));
    },
    memory: () => server.backend?.memory,
    health: () => {
      const metrics = server.metrics();
      return {
        faults: metrics.deviceFailures ?? 0,
        needsReset: metrics.deviceFailures ?? 0,
        activations: metrics.activations ?? 0,
      };
    },
    transport: () => server.metrics(),
  };
}

interface VhostUserOptions {
  socketPath: string[];
  set: Record<string, unknown>;
  once?: boolean;
  xenMmap?: boolean;
  pollUs?: number;
  metricsPort?: number;
}

function deviceArgument(value: string): DeviceName {
  if (!isDeviceName(value)) {
    throw new InvalidArgumentError(`allowed: ${DEVICE_NAMES.join(', ')}.`);
  }
  return value;
}

export const vhostUserCommand: CommandModule = {
  name: 'vhost-user',
  register(program, runtime) {
    program
      .command('vhost-user')
      .description('serve one device type to vhost-user frontends (QEMU) on one or more unix sockets')
      .argument('<device>', `device to serve (${DEVICE_NAMES.join(', ')})`, deviceArgument)
      .requiredOption(
        '-s, --socket-path <path>',
        'unix socket to listen on; repeat for more sockets (one device per socket)',
        (value: string, previous: string[] | undefined) => [...(previous ?? []), value],
      )
      .option(
        '--set <key=value>',
        'device option (repeatable; dotted keys nest, JSON values): --set queueSize=128 --set host.type=switch',
        collectSetting,
        {},
      )
      .option('--once', 'serve one frontend per socket, then exit')
      .option(
        '--xen-mmap',
        "serve Xen's vhost-user frontends (VHOST_USER_PROTOCOL_F_XEN_MMAP) through native Xen (dom0 or a driver domain): foreign regions are mapped through privcmd; grant regions (guest addresses are grant references, as with xen-grant-dma) are mapped through gntdev per request, or in advance for ring regions not flagged NO_ADVANCE_MAP",
      )
      .option(
        '--poll-us <microseconds>',
        "adaptive polling, off by default: after a ring had work, look at it for this long (renewed by more work) with the guest's kicks suppressed, yielding the CPU between looks; trades CPU time while the guest uses the device for the wake-up a kick costs (as QEMU's iothread poll-max-ns); 0-10000",
        parseIntegerOption('--poll-us', 0, 10_000),
      )
      .option(
        '--metrics-port <port>',
        'serve Prometheus metrics on 127.0.0.1:PORT (0: any free port)',
        parseIntegerOption('--metrics-port', 0, 65535),
      )
      .action(async (device: DeviceName, options: VhostUserOptions) => {
        const { context, log, shutdown } = runtime();
        const paths = options.socketPath.map((path) => resolve(context.cwd, path));
        const duplicate = paths.find((path, index) => paths.indexOf(path) !== index);
        if (duplicate) throw new CliError('invalid-arguments', `--socket-path ${duplicate} is given twice`);
        const loaded = await context.registry.load(device);
        // Validated once, here; each connection then builds its own device from the same options.
        // A vhost-user frontend keeps virtio-net's control queue itself (QEMU never passes
        // CTRL_VQ on), so a net device behind it defers to the frontend unless told otherwise.
        const settings: Record<string, unknown> =
          device === 'net' && options.set.controlQueue === undefined
            ? { controlQueue: 'frontend', ...options.set }
            : options.set;
        const configFor = (index: number): Record<string, unknown> =>
          settings.name === undefined
            ? { ...settings, name: paths.length > 1 ? `${device}${index}` : `${device}0` }
            : {
                ...settings,
                ...(paths.length > 1 ? { name: `${String(settings.name)}-${index}` } : {}),
              };
        // A package without an exported schema is validated by building (and dropping) one device.
        if (!loaded.validate(configFor(0), '--set ')) loaded.create(configFor(0), '--set ').reset();
        const vhostUser = await loadVhostUser();
        let xenMapper: unknown;
        if (options.xenMmap) {
          await requireNativeXen({ root: '/', uid: process.getuid?.() ?? 0, env: context.env });
          const xen = await loadXenModule();
          const openForeign = xen.openNativeForeignMemory as (() => unknown) | undefined;
          const openGrants = xen.openNativeGrantTables as (() => unknown) | undefined;
          if (
            typeof openForeign !== 'function' ||
            typeof openGrants !== 'function' ||
            typeof vhostUser.createXenRegionMapper !== 'function'
          ) {
            throw new CliError(
              'feature-unavailable',
              '--xen-mmap is not available in this build (no native foreign memory or grant tables)',
            );
          }
          const foreignMemory = openForeign() as { close(): void };
          shutdown.add('native foreign memory', () => foreignMemory.close());
          const grants = openGrants() as { close(): void };
          shutdown.add('native grant tables', () => grants.close());
          xenMapper = vhostUser.createXenRegionMapper({ foreignMemory, grants });
        }
        // A net device's host side (TAP, switch port, socket, capture) belongs to the socket,
        // not to one connection: it is opened once, lent to each connection's device in turn
        // and closed with the socket, so reconnecting frontends leak no TAP and no fd.
        const openPort = loaded.module.openNetPort as ((config: unknown) => NetPortLike) | undefined;
        const metrics = new XvioMetrics();
        const servers: VhostUserServer[] = [];
        const closed: Promise<void>[] = [];
        for (const [index, socketPath] of paths.entries()) {
          const config = configFor(index);
          const deviceLog = deviceLogger(log, String(config.name));
          let port: NetPortLike | undefined;
          if (device === 'net' && typeof openPort === 'function') {
            try {
              port = openPort(config);
            } catch (error) {
              throw new CliError(
                'io-failed',
                `cannot open the host side of ${String(config.name)}: ${describeError(error)}`,
                {
                  cause: error,
                },
              );
            }
            const opened = port;
            shutdown.add(`net host side ${String(config.name)}`, () => opened.close());
          }
          const makeDevice = port === undefined ? () => loaded.create(config) : port.createDevice.bind(port);
          let server: VhostUserServer;
          try {
            server = vhostUser.serveVhostUser({
              socketPath,
              device: makeDevice,
              once: options.once === true,
              ...(xenMapper === undefined ? {} : { xenMapper, offerXenMmap: true }),
              ...(options.pollUs === undefined ? {} : { pollUs: options.pollUs }),
              log: adaptLogger(deviceLog),
            });
          } catch (error) {
            throw new CliError('io-failed', `cannot listen on ${socketPath}: ${describeError(error)}`, {
              cause: error,
            });
          }
          servers.push(server);
          const portOfServer = port;
          closed.push(
            new Promise((done) =>
              server.on('close', () => {
                if (portOfServer === undefined) done();
                else void portOfServer.close().finally(done);
              }),
            ),
          );
          metrics.add(vhostUserSource(server));
          shutdown.add(`vhost-user ${socketPath}`, () => server.close());
          context.stdout.write(`serving ${device} (${String(config.name)}) on ${socketPath}\n`);
        }
        if (options.metricsPort !== undefined) {
          const http = await serveMetrics(metrics, options.metricsPort);
          shutdown.add('metrics server', () => http.close());
          context.stdout.write(`metrics: http://127.0.0.1:${http.port}/metrics\n`);
        }
        if (context.handleSignals) shutdown.install();
        // Until a signal, or (with --once) until every socket served its frontend.
        await Promise.race([shutdown.whenStopRequested(), Promise.all(closed)]);
        const served = servers.reduce((sum, server) => sum + server.connections, 0);
        log.info({ connections: served }, 'vhost-user stopped');
      });
  },
};
