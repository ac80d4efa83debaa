import { Option } from 'commander';
import type { CommandModule } from './cli-context.js';
import { type CheckResult, runHostChecks } from './doctor-checks.js';

const labels = { ok: 'OK  ', warn: 'WARN', fail: 'FAIL' } as const;

export function formatChecks(results: readonly CheckResult[]): string {
  const width = Math.max(...results.map((result) => result.name.length));
  const lines = ['xvio doctor: can this host serve real Xen guests?', ''];
  for (const result of results) {
    lines.push(`  ${labels[result.status]}  ${result.name.padEnd(width)}  ${result.detail}`);
    if (result.fix && result.status !== 'ok') lines.push(`  ${' '.repeat(6 + width)}  fix: ${result.fix}`);
  }
  const failures = results.filter((result) => result.status === 'fail').length;
  const warnings = results.filter((result) => result.status === 'warn').length;
  lines.push('');
  lines.push(
    failures === 0
      ? `ready for native Xen (${warnings} warning${warnings === 1 ? '' : 's'})`
      : `${failures} problem${failures === 1 ? '' : 's'} to fix before native Xen use; the simulator works regardless (xen = "sim")`,
  );
  return `${lines.join('\n')}\n`;
}

export const doctorCommand: CommandModule = {
  name: 'doctor',
  register(program, runtime) {
    program
      .command('doctor')
      .description(
        'check this host for real Xen use (dom0/driver domain, /dev/xen, modules, libraries, limits) and say what to fix',
      )
      .option('--json', 'print the checks as JSON')
      .addOption(new Option('--root <dir>', 'inspect a host tree mounted elsewhere').default('/').hideHelp())
      .action(async (options: { json?: boolean; root: string }) => {
        const { context } = runtime();
        const results = await runHostChecks({
          root: options.root,
          uid: process.getuid?.() ?? 0,
          env: context.env,
        });
        context.stdout.write(options.json ? `${JSON.stringify(results, null, 2)}\n` : formatChecks(results));
        runtime().exitCode = results.some((result) => result.status === 'fail') ? 1 : 0;
      });
  },
};
