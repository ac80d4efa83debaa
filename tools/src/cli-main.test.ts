import { describe, expect, it } from 'vitest';
import { runForTest } from './testing/run-cli.js';

describe('xvio program', () => {
  it('prints help listing every command and the global --log-level', async () => {
    const result = await runForTest(['--help']);
    expect(result.status).toBe(0);
    expect(result.stdout).toContain('Usage: xvio [options] [command]');
    expect(result.stdout).toContain('--log-level <level>');
    for (const command of ['run', 'devices', 'doctor'])
      expect(result.stdout).toMatch(new RegExp(`\\n  ${command}\\b`));
  });

  it('rejects an unknown log level with the allowed values', async () => {
    const result = await runForTest(['--log-level', 'loud', 'devices']);
    expect(result.status).toBe(2);
    expect(result.stderr).toBe(
      "error: option '--log-level <level>' argument 'loud' is invalid. Allowed choices are fatal, error, warn, info, debug, trace, silent.\n(run with --help for usage)\n",
    );
  });

  it('rejects an unknown command', async () => {
    const result = await runForTest(['frobnicate']);
    expect(result.status).toBe(2);
    expect(result.stderr).toBe("error: unknown command 'frobnicate'\n(run with --help for usage)\n");
  });

  it('rejects an unknown flag of a subcommand and points at its help', async () => {
    const result = await runForTest(['doctor', '--frob']);
    expect(result.status).toBe(2);
    expect(result.stderr).toBe("error: unknown option '--frob'\n(run 'xvio doctor --help' for usage)\n");
  });

  it('prints its version', async () => {
    const result = await runForTest(['--version']);
    expect(result).toEqual({ status: 0, stdout: '0.1.0\n', stderr: '' });
  });
});
