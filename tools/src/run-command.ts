import { resolve } from 'node:path';
import { InvalidArgumentError, Option } from 'commander';
import type { CommandModule } from './cli-context.js';
import { CliError } from './cli-errors.js';
import type { DeviceRegistry } from './device-registry.js';
import { controllerSource, serveMetrics, XvioMetrics } from './metrics-registry.js';
import { loadRunPlan, type RunPlan, XEN_MODES, type XenMode } from './run-config.js';
import { requireNativeXen, startSimulatedXenstored } from './xen-services.js';

interface RunOptions {
  config: string;
  xen?: XenMode;
  domid?: number;
  backendDomid?: number;
  check?: boolean;
  metricsPort?: number;
  hostRoot?: string;
}

export function parseIntegerOption(_name: string, min: number, max: number): (value: string) => number {
  return (value) => {
    if (!/^[0-9]+$/.test(value)) throw new InvalidArgumentError(`expected an integer in ${min}..${max}.`);
    const number = Number(value);
    if (number < min || number > max) throw new InvalidArgumentError(`allowed: ${min}..${max}.`);
    return number;
  };
}

/**
 * Every device's package is loaded and its options validated by the package's schema, all
 * before anything starts; the errors name the config path (`domains[0].devices[1].options.mac`).
 */
export async function validateDevices(plan: RunPlan, registry: DeviceRegistry): Promise<void> {
  const problems: string[] = [];
  for (const domain of plan.domains) {
    for (const device of domain.devices) {
      try {
        const loaded = await registry.load(device.device);
        loaded.validate(
          device.options,
          device.source.includes('.devices[') ? `${device.source}.options` : device.source,
        );
      } catch (error) {
        if (!CliError.isInstance(error) || error.code !== 'invalid-config') throw error;
        problems.push(
          ...error.message
            .split('\n')
            .slice(1)
            .map((line) => line.trim()),
        );
      }
    }
  }
  if (problems.length > 0) {
    throw new CliError('invalid-config', `invalid device options:\n  ${problems.join('\n  ')}`);
  }
}

/** The plan as a person reads it: what will be served to whom, over what. */
export function describePlan(plan: RunPlan): string {
  const lines = [`xen: ${plan.xen}, backend domain ${plan.backendDomid}`];
  if (plan.metricsPort !== undefined) lines.push(`metrics: http://127.0.0.1:${plan.metricsPort}/metrics`);
  for (const domain of plan.domains) {
    lines.push(`domain ${domain.domid}${domain.name ? ` (${domain.name})` : ''}:`);
    for (const device of domain.devices) {
      lines.push(
        `  devid ${device.devid}: ${device.device} over ${device.transport}, memory ${device.memory}  [${device.source}]`,
      );
    }
  }
  for (const line of plan.skipped) lines.push(`skipped ${line}`);
  return `${lines.join('\n')}\n`;
}

export const runCommand: CommandModule = {
  name: 'run',
  register(program, runtime) {
    program
      .command('run')
      .description('serve the configured devices to one or many Xen domains (native Xen or the simulator)')
      .requiredOption(
        '-c, --config <file>',
        'configuration: .toml, .yaml/.yml, or an xl domain configuration (.cfg)',
      )
      .addOption(
        new Option('--xen <mode>', 'native Xen or the simulator (overrides the config)').choices([
          ...XEN_MODES,
        ]),
      )
      .option('--domid <id>', 'guest domain ID, for an xl .cfg', parseIntegerOption('--domid', 1, 0x7fef))
      .option(
        '--backend-domid <id>',
        'this backend domain ID, for an xl .cfg',
        parseIntegerOption('--backend-domid', 0, 0x7fef),
      )
      .option(
        '--metrics-port <port>',
        'serve Prometheus metrics on 127.0.0.1:PORT (0: any free port)',
        parseIntegerOption('--metrics-port', 0, 65535),
      )
      .option('--check', 'validate the configuration, print the plan and exit')
      .addOption(new Option('--host-root <dir>', 'inspect a host tree mounted elsewhere').hideHelp())
      .action(async (options: RunOptions) => {
        const { context, log, shutdown } = runtime();
        const plan = await loadRunPlan(options.config, context.cwd, {
          ...(options.xen !== undefined ? { xen: options.xen } : {}),
          ...(options.domid !== undefined ? { domid: options.domid } : {}),
          ...(options.backendDomid !== undefined ? { backendDomid: options.backendDomid } : {}),
        });
        const effective: RunPlan = {
          ...plan,
          xen: options.xen ?? plan.xen,
          metricsPort: options.metricsPort ?? plan.metricsPort,
        };
        await validateDevices(effective, context.registry);
        if (options.check) {
          context.stdout.write(describePlan(effective));
          return;
        }
        if (effective.xen === 'native') {
          await requireNativeXen(
            { root: options.hostRoot ?? '/', uid: process.getuid?.() ?? 0, env: context.env },
            options.hostRoot === undefined,
          );
        }
        log.debug({ plan: effective }, 'configuration accepted');
        const { serveRunPlan } = await import('./run-serve.js');
        const metrics = new XvioMetrics();
        const discovered = new Map<unknown, () => void>();
        const backend = await serveRunPlan(effective, context.registry, log, {
          onDiscovered: (device) =>
            discovered.set(device, metrics.add(controllerSource(`dom${device.domid}`, device.controller))),
          onRemoved: (device) => discovered.get(device)?.(),
        });
        shutdown.add('backend', () => backend.close());
        for (const served of backend.devices)
          metrics.add(controllerSource(`dom${served.domid}`, served.controller));
        if (effective.metricsPort !== undefined) {
          const server = await serveMetrics(metrics, effective.metricsPort);
          shutdown.add('metrics server', () => server.close());
          context.stdout.write(`metrics: http://127.0.0.1:${server.port}/metrics\n`);
        }
        if (backend.simulator && effective.xenstoredSocket !== undefined) {
          const socketPath = resolve(context.cwd, effective.xenstoredSocket);
          const xenstored = await startSimulatedXenstored(
            socketPath,
            log.child({ component: 'xenstored' }),
            backend.simulator.xenstored,
          );
          shutdown.add('xenstored', () => xenstored.close());
          context.stdout.write(`xenstored listening on ${socketPath}\n`);
        }
        const domains = new Set(backend.devices.map((served) => served.domid)).size;
        context.stdout.write(
          `serving ${backend.devices.length} device(s) to ${domains} domain(s) on ${effective.xen === 'sim' ? 'the Xen simulator' : 'Xen'}\n`,
        );
        if (backend.discovery) {
          context.stdout.write(
            `watching /local/domain/${effective.backendDomid}/backend/virtio for devices libxl configures\n`,
          );
        }
        if (backend.simulator) {
          context.stdout.write(
            'the simulated domains run no guest OS: nothing drives these devices (xvio demo runs guest drivers)\n',
          );
        }
        if (context.handleSignals) shutdown.install();
        await shutdown.whenStopRequested();
      });
  },
};
