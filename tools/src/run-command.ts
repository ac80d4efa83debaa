import { InvalidArgumentError, Option } from 'commander';
import type { CommandModule } from './cli-context.js';
import { CliError } from './cli-errors.js';
import { loadRunPlan, type RunPlan, XEN_MODES, type XenMode } from './run-config.js';
import { requireNativeXen } from './xen-services.js';

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
        const { context, log } = runtime();
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
        // Devices first: a missing device package is the most common reason a run cannot start.
        for (const domain of effective.domains) {
          for (const device of domain.devices) await context.registry.load(device.device);
        }
        log.debug({ plan: effective }, 'configuration accepted');
        const transports = [
          ...new Set(effective.domains.flatMap((domain) => domain.devices.map((d) => d.transport))),
        ];
        throw new CliError(
          'feature-unavailable',
          `transport ${transports.join(', ')} is not available in this build: the ${effective.xen === 'sim' ? 'simulator' : 'Xen'} transports are not wired yet (use 'xvio run --check' to validate, or 'xvio vhost-user')`,
        );
      });
  },
};
