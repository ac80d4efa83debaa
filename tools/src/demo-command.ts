import {
  type DeviceController,
  STATUS_DEVICE_NEEDS_RESET,
  STATUS_DRIVER_OK,
  type VirtioDevice,
} from '@xvio/transport';
import { seededRandom } from '@xvio/transport/testing';
import { Option } from 'commander';
import type { CommandModule, OutputStream } from './cli-context.js';
import { CliError, describeError } from './cli-errors.js';
import { deviceLogger } from './cli-logger.js';
import { DemoConsole } from './demo-console.js';
import { MockGuestDevice } from './demo-guest-driver.js';
import { loadSimModules, SIM_GUESTS, SimDemo, type SimDeviceRequest } from './demo-sim.js';
import {
  CONSOLE_DEMO_REFUSED_FEATURES,
  consoleWorkloads,
  type GuestCounters,
  NET_DEMO_REFUSED_FEATURES,
  netWorkloads,
  newGuestCounters,
  type QueueWorkload,
  rngWorkloads,
} from './demo-workloads.js';
import { deviceListOption } from './device-options.js';
import type { DeviceName } from './device-registry.js';
import { controllerSource, serveMetrics, XvioMetrics } from './metrics-registry.js';
import { parseIntegerOption } from './run-command.js';

const DEMO_DEVICES: readonly DeviceName[] = ['console', 'rng', 'net'];

/** What each guest runs over without the simulator: said in the output, so nobody mistakes it for more. */
const IN_PROCESS_GUESTS = [
  { name: 'guest1', over: 'in-process driver, split rings in test memory (no transport, no Xen)' },
  { name: 'guest2', over: 'in-process driver, split rings in test memory (no transport, no Xen)' },
] as const;

interface DemoDevice {
  readonly guest: string;
  readonly kind: DeviceName;
  readonly device: VirtioDevice;
  /** The backend's controller (status, faults, NEEDS_RESET). */
  controller: DeviceController | undefined;
  readonly counters: GuestCounters;
  readonly sent: GuestCounters | undefined;
  started: boolean;
  /** Why the guest's driver stopped early. */
  failure: () => string | undefined;
  /** A console's host side: the guest's last line, and dom0's typing. */
  readonly console: DemoConsole | undefined;
}

interface DemoOptions {
  seconds?: number;
  devices: DeviceName[];
  live: boolean;
  metricsPort?: number;
  guests: 'sim' | 'in-process';
}

const GUEST_MACS = ['52:54:00:00:00:01', '52:54:00:00:00:02'] as const;

interface Workload {
  readonly queues: QueueWorkload[];
  readonly refuse?: bigint;
  /** Second counter set (net: frames sent, beside bytes received). */
  readonly sent?: GuestCounters;
}

function workloadsFor(
  kind: DeviceName,
  counters: GuestCounters,
  guest: number,
  seed: number,
): Workload | undefined {
  switch (kind) {
    case 'rng':
      return { queues: rngWorkloads(counters, seededRandom(seed)) };
    case 'console': {
      // The console's numbers read from the guest's side: what it wrote goes out.
      const written = newGuestCounters();
      return {
        queues: consoleWorkloads(written, counters, `guest${guest + 1}`),
        refuse: CONSOLE_DEMO_REFUSED_FEATURES,
        sent: written,
      };
    }
    case 'net': {
      const sent = newGuestCounters();
      const mac = GUEST_MACS[guest % 2]!;
      const peer = GUEST_MACS[(guest + 1) % 2]!;
      return {
        queues: netWorkloads(counters, sent, mac, peer, seededRandom(seed)),
        refuse: NET_DEMO_REFUSED_FEATURES,
        sent,
      };
    }
    default:
      return undefined;
  }
}

function deviceConfig(kind: DeviceName, guest: string, index: number): Record<string, unknown> {
  switch (kind) {
    case 'rng':
      return { name: `${guest}-rng0`, source: 'os' };
    case 'console':
      // Port 0's host is replaced by the demo's in-memory host (DemoConsole) when the console
      // package has one; `null` (discard) is what is left otherwise.
      return { name: `${guest}-console0`, size: 'off', ports: [{ console: true, host: 'null' }] };
    case 'net':
      // Both guests' ports on one in-process switch: their frames cross it.
      return { name: `${guest}-net0`, mac: GUEST_MACS[index % 2], host: { type: 'switch', switch: 'demo' } };
    default:
      return { name: `${guest}-${kind}0` };
  }
}

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${Math.round(bytes)} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}

interface Row {
  guest: string;
  device: string;
  requests: string;
  bytesIn: string;
  bytesOut: string;
  rate: string;
  faults: string;
  needsReset: string;
  memory: string;
  status: string;
}

function table(rows: readonly Row[]): string {
  const header: Row = {
    guest: 'guest',
    device: 'device',
    requests: 'requests',
    bytesIn: 'guest in',
    bytesOut: 'guest out',
    rate: 'rate',
    faults: 'faults',
    needsReset: 'needs-reset',
    memory: 'memory (maps)',
    status: 'status',
  };
  const all = [header, ...rows];
  const keys = Object.keys(header) as (keyof Row)[];
  const widths = keys.map((key) => Math.max(...all.map((row) => row[key].length)));
  return `${all
    .map((row) =>
      keys
        .map((key, i) => row[key].padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')}\n`;
}

function statusText(entry: DemoDevice): string {
  if (!entry.started || !entry.controller) return 'did not start';
  if (entry.failure()) return 'driver stopped';
  const status = entry.controller.status;
  if (status & STATUS_DEVICE_NEEDS_RESET) return 'needs reset';
  if (status & STATUS_DRIVER_OK) return 'running';
  return status === 0 ? 'reset' : 'starting';
}

/**
 * One row per device. `seconds` is the time the rate is over; with `since` (the totals at
 * the previous live refresh) the rate is the current one, else the average of the run.
 */
function rows(devices: readonly DemoDevice[], seconds: number, since?: Map<DemoDevice, number>): Row[] {
  return devices.map((entry) => {
    const metrics = entry.controller?.metrics ?? { faults: 0, needsReset: 0 };
    const bytesOut = entry.sent?.bytes ?? 0;
    const total = entry.counters.bytes + bytesOut - (since?.get(entry) ?? 0);
    return {
      guest: entry.guest,
      device: entry.device.name,
      requests: String(entry.counters.requests + (entry.sent?.requests ?? 0)),
      bytesIn: formatBytes(entry.counters.bytes),
      bytesOut: entry.sent ? formatBytes(bytesOut) : '-',
      rate: `${formatBytes(seconds > 0 ? total / seconds : 0)}/s`,
      faults: String(metrics.faults + entry.counters.errors + (entry.sent?.errors ?? 0)),
      needsReset: String(metrics.needsReset),
      memory: entry.controller
        ? `${entry.controller.memory.kind} (${entry.controller.memory.counters.maps})`
        : '-',
      status: statusText(entry),
    };
  });
}

function sleep(ms: number, signal: Promise<unknown>): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    void signal.then(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

export const demoCommand: CommandModule = {
  name: 'demo',
  register(program, runtime) {
    program
      .command('demo')
      .description(
        'the simulator demo: a backend serving console, rng and net to two guests, with live counters',
      )
      .option(
        '--seconds <n>',
        'run N seconds, print the summary and exit',
        parseIntegerOption('--seconds', 1, 86_400),
      )
      .option('--devices <list>', 'devices each guest gets (console, rng, net)', deviceListOption, [
        ...DEMO_DEVICES,
      ])
      .option('--no-live', 'no live counters, only the summary')
      .option(
        '--metrics-port <port>',
        'serve Prometheus metrics on 127.0.0.1:PORT (0: any free port)',
        parseIntegerOption('--metrics-port', 0, 65535),
      )
      .addOption(
        new Option(
          '--guests <kind>',
          'sim: guests on the Xen simulator over real transports; in-process: no Xen',
        )
          .choices(['sim', 'in-process'])
          .default('sim'),
      )
      .action(async (options: DemoOptions) => {
        const { context, log, shutdown } = runtime();
        const out: OutputStream = context.stdout;
        let sim: SimDemo | undefined;
        let guests: readonly { name: string; over: string }[] = IN_PROCESS_GUESTS;
        const notes: string[] = [];
        if (options.guests === 'sim') {
          const { modules, missing } = await loadSimModules();
          if (modules) {
            sim = new SimDemo(modules);
            guests = SIM_GUESTS;
          } else {
            notes.push(
              `  simulated guests: not available in this build (missing ${missing.join('; ')}); using in-process drivers`,
            );
          }
        }
        out.write(
          `xvio demo: one backend (dom0) serving devices to two guests${sim ? ' on the Xen simulator' : ''}\n`,
        );
        for (const guest of guests) out.write(`  ${guest.name}: ${guest.over}\n`);
        if (options.devices.includes('net'))
          out.write("  net: both guests' ports on one switch in the backend (frames cross it)\n");
        const devices: DemoDevice[] = [];
        const metrics = new XvioMetrics();
        const simRequests: SimDeviceRequest[] = [];
        const mockDrivers: { entry: DemoDevice; driver: MockGuestDevice }[] = [];
        for (const kind of options.devices) {
          let loaded: Awaited<ReturnType<typeof context.registry.load>>;
          try {
            loaded = await context.registry.load(kind);
          } catch (error) {
            notes.push(`  ${kind}: ${CliError.isInstance(error) ? error.message : describeError(error)}`);
            continue;
          }
          for (const [index, guest] of guests.entries()) {
            const counters = newGuestCounters();
            const workloads = workloadsFor(kind, counters, index, 1000 * (index + 1));
            if (!workloads) {
              if (index === 0) notes.push(`  ${kind}: the demo has no guest driver for it yet`);
              continue;
            }
            const consoleHost =
              kind === 'console' ? DemoConsole.create(guest.name, loaded.module) : undefined;
            const device = loaded.create(
              deviceConfig(kind, guest.name, index),
              undefined,
              consoleHost ? { hosts: { 0: consoleHost.host } } : undefined,
            );
            const entry: DemoDevice = {
              guest: guest.name,
              kind,
              device,
              controller: undefined,
              counters,
              sent: workloads.sent,
              started: false,
              failure: () => undefined,
              console: consoleHost,
            };
            devices.push(entry);
            deviceLogger(log, device.name).debug({ over: guest.over }, 'device created');
            if (sim) {
              simRequests.push({
                guest: index,
                device,
                workloads: workloads.queues,
                refuse: workloads.refuse ?? 0n,
              });
            } else {
              const driver = new MockGuestDevice(device, workloads.queues, {
                seed: 7 * (index + 1),
                ...(workloads.refuse !== undefined ? { refuse: workloads.refuse } : {}),
              });
              entry.controller = driver.controller;
              mockDrivers.push({ entry, driver });
            }
          }
        }
        if (notes.length > 0) out.write(`not in this demo:\n${notes.join('\n')}\n`);
        if (devices.length === 0) {
          throw new CliError('device-unavailable', 'none of the demo devices is available in this build');
        }
        if (sim) {
          const machine = sim;
          shutdown.add('simulated machine', () => machine.stop());
          await machine.start(simRequests, (error) =>
            log.warn({ err: error }, 'transport reported an error'),
          );
          // SimDemo lists its devices in the order it started them: PCI guest first, then XenBus.
          const order = [
            ...simRequests.filter((r) => r.guest === 0),
            ...simRequests.filter((r) => r.guest === 1),
          ];
          for (const [position, request] of order.entries()) {
            const entry = devices.find((candidate) => candidate.device === request.device)!;
            const served = machine.devices[position]!;
            entry.controller = served.controller;
            entry.started = true;
            entry.failure = () => served.failure;
          }
        } else {
          for (const { entry, driver } of mockDrivers) {
            entry.started = driver.start();
            shutdown.add(`${entry.guest} ${entry.device.name}`, () => driver.stop());
            if (!entry.started) log.error({ device: entry.device.name }, 'device did not start');
          }
        }
        for (const entry of devices)
          if (entry.controller) metrics.add(controllerSource(entry.guest, entry.controller));
        if (options.metricsPort !== undefined) {
          const server = await serveMetrics(metrics, options.metricsPort);
          shutdown.add('metrics server', () => server.close());
          out.write(`metrics: http://127.0.0.1:${server.port}/metrics\n`);
        }
        if (context.handleSignals) shutdown.install();
        const stop = shutdown.whenStopRequested();
        const started = performance.now();
        const live = options.live && out.isTTY === true;
        if (options.seconds === undefined) out.write('running: Ctrl-C stops and prints the summary\n');
        let drawn = 0;
        let ticks = 0;
        const consoleLines = () =>
          devices
            .flatMap((entry) =>
              entry.console ? [`${entry.guest} console> ${entry.console.lastLine}\n`] : [],
            )
            .join('');
        // Live rates are over the last refresh; the summary's over the whole run.
        const previous = new Map<DemoDevice, number>();
        let lastDraw = started;
        const deadline =
          options.seconds === undefined ? Number.POSITIVE_INFINITY : started + options.seconds * 1000;
        let stopRequested = false;
        void stop.then(() => {
          stopRequested = true;
        });
        while (!stopRequested && performance.now() < deadline) {
          await sleep(Math.min(500, Math.max(0, deadline - performance.now())), stop);
          ticks++;
          for (const entry of devices) {
            entry.console?.drain();
            if (ticks % 2 === 1) entry.console?.type();
          }
          if (live) {
            const now = performance.now();
            const text = table(rows(devices, (now - lastDraw) / 1000, previous)) + consoleLines();
            lastDraw = now;
            for (const entry of devices) previous.set(entry, entry.counters.bytes + (entry.sent?.bytes ?? 0));
            if (drawn > 0) out.write(`\u001b[${drawn}A\u001b[J`);
            out.write(text);
            drawn = text.split('\n').length - 1;
          }
        }
        const elapsed = (performance.now() - started) / 1000;
        const summary = table(rows(devices, elapsed));
        const failures = devices.flatMap((entry) => {
          const failure = entry.failure();
          return failure ? [`  ${entry.guest} ${entry.device.name}: ${failure}`] : [];
        });
        const faulted = devices.filter(
          (entry) =>
            !entry.started ||
            entry.failure() !== undefined ||
            (entry.controller?.metrics.faults ?? 0) > 0 ||
            entry.counters.errors > 0 ||
            (entry.sent?.errors ?? 0) > 0,
        );
        await shutdown.run();
        if (live && drawn > 0) out.write(`\u001b[${drawn}A\u001b[J`);
        out.write(
          `\nsummary after ${elapsed.toFixed(1)} s (counted by the guests' drivers; faults include the backend's):\n`,
        );
        out.write(summary);
        out.write(consoleLines());
        if (failures.length > 0) out.write(`guest drivers that stopped:\n${failures.join('\n')}\n`);
        if (faulted.length > 0) {
          out.write(`${faulted.length} device(s) faulted\n`);
          runtime().exitCode = 1;
        }
      });
  },
};
