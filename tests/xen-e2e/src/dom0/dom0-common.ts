// Shared by the dom0 scenarios: PASS/FAIL markers, xl, guest console logs, selectors.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';

export const results: { name: string; ok: boolean; detail: string }[] = [];

export async function check(name: string, body: () => Promise<string> | string): Promise<void> {
  try {
    const detail = await body();
    results.push({ name, ok: true, detail });
    console.log(`XVIO-PASS ${name} ${detail}`);
  } catch (error) {
    results.push({ name, ok: false, detail: String(error) });
    console.log(
      `XVIO-FAIL ${name} ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`,
    );
  }
}

export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

export const withTimeout = <T>(promise: Promise<T>, ms: number, what: string) =>
  Promise.race([
    promise,
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`timeout: ${what}`)), ms)),
  ]);

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export function xl(...args: string[]): string {
  try {
    return execFileSync('xl', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr ?? '';
    throw new Error(`xl ${args.join(' ')} failed: ${stderr.trim().split('\n').slice(-6).join(' | ')}`);
  }
}

/** Domains `xl list` shows, by name (dying domains show as "(null)"). */
export function domainNames(): string[] {
  return xl('list')
    .split('\n')
    .slice(1)
    .map((line) => line.split(/\s+/)[0] ?? '')
    .filter((name) => name.length > 0);
}

export function readLog(path: string): string {
  return existsSync(path) ? readFileSync(path, 'latin1') : '';
}

/** Guest console lines that start with `DOMU-`, wherever the console put them. */
export function guestLines(log: string): string[] {
  return log
    .split(/\r?\n/)
    .filter((line) => line.includes('DOMU-'))
    .map((line) => line.slice(line.indexOf('DOMU-')).trim());
}

/** Relays the guest's markers: `DOMU-MEASURE` becomes `XVIO-MEASURE`, the rest `XVIO-GUEST`. */
export function relayGuest(lines: string[], prefix = ''): void {
  for (const line of lines) {
    const [tag, name, value, unit] = line.split(' ');
    if (tag === 'DOMU-MEASURE' && name && value)
      console.log(`XVIO-MEASURE ${prefix}${name} ${value} ${unit ?? ''}`);
    else console.log(`XVIO-GUEST ${line}`);
  }
}

/** Scenarios chosen with `xvio.scenarios=a+b` on dom0's kernel command line; default all. */
export function selectedScenarios(): (name: string) => boolean {
  const cmdline = existsSync('/proc/cmdline') ? readFileSync('/proc/cmdline', 'utf8') : '';
  const chosen = /xvio\.scenarios=(\S+)/.exec(cmdline)?.[1];
  if (!chosen || chosen === 'all') return () => true;
  // '+' separates names on the command line (QEMU's -initrd splits modules at commas).
  const set = new Set(chosen.split(/[+,]/));
  return (name) => set.has(name);
}

/** On failure: the tail of a guest console and of the hypervisor log, as XVIO-DIAG lines. */
export function diagnose(consoleLog: string): void {
  const tail = readLog(consoleLog).split(/\r?\n/).slice(-25);
  for (const line of tail) console.log(`XVIO-DIAG console ${line}`);
  try {
    const dmesg = execFileSync('xl', ['dmesg'], { encoding: 'utf8' }).split('\n').slice(-15);
    for (const line of dmesg) console.log(`XVIO-DIAG xen ${line}`);
  } catch (error) {
    console.log(`XVIO-DIAG xl dmesg failed ${String(error)}`);
  }
}

/**
 * Writes `/tmp/<name>.cfg`, the xl config of a stock-kernel HVM guest (the rig's domU
 * initramfs, serial console to `/tmp/<name>-serial.log`, qemu-xen as device model);
 * `args` are extra kernel arguments, e.g. `xvio.mode=...` for the guest's /init.
 */
export function writeHvmConfig(name: string, args = '', memory = 256): { config: string; serial: string } {
  const config = `/tmp/${name}.cfg`;
  const serial = `/tmp/${name}-serial.log`;
  writeFileSync(
    config,
    [
      `name="${name}"`,
      'type="hvm"',
      'kernel="/root/vmlinuz"',
      'ramdisk="/root/domu-initramfs.cpio.gz"',
      `cmdline="console=ttyS0 rdinit=/init quiet${args ? ` ${args}` : ''}"`,
      `memory=${memory}`,
      'vcpus=1',
      'on_poweroff="destroy"',
      'tsc_mode="native"',
      'cpuid="host,rdtscp=0"',
      `serial="file:${serial}"`,
      'vga="none"',
      'nographic=1',
      'vnc=0',
      'device_model_version="qemu-xen"',
      '',
    ].join('\n'),
  );
  return { config, serial };
}
