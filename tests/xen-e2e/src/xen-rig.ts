import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = join(dirname(fileURLToPath(import.meta.url)), '..');

export interface RigResult {
  passed: { name: string; detail: string }[];
  failed: { name: string; detail: string }[];
  measures: { name: string; value: number; unit: string }[];
  notes: string[];
  dom0ReadySeconds: number | undefined;
  done: boolean;
  /** The whole serial console (Xen and dom0), for diagnosis. */
  log: string;
  seconds: number;
}

function run(script: string, env: NodeJS.ProcessEnv = {}): Promise<{ code: number; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [join(here, 'rig', script)], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString('latin1');
    });
    child.stderr.on('data', (chunk: Buffer) => {
      output += chunk.toString('latin1');
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? 1, output }));
  });
}

/** Parses the XVIO-* marker lines the dom0 program prints on the serial console. */
export function parseRigLog(log: string): Omit<RigResult, 'log' | 'seconds'> {
  const result: Omit<RigResult, 'log' | 'seconds'> = {
    passed: [],
    failed: [],
    measures: [],
    notes: [],
    dom0ReadySeconds: undefined,
    done: false,
  };
  for (const raw of log.split(/\r?\n/)) {
    const line = raw.slice(raw.indexOf('XVIO-'));
    if (!raw.includes('XVIO-')) continue;
    const [tag, name = '', ...rest] = line.split(' ');
    if (tag === 'XVIO-PASS') result.passed.push({ name, detail: rest.join(' ') });
    else if (tag === 'XVIO-FAIL') result.failed.push({ name, detail: rest.join(' ') });
    else if (tag === 'XVIO-MEASURE')
      result.measures.push({ name, value: Number(rest[0]), unit: rest[1] ?? '' });
    else if (tag === 'XVIO-NOTE') result.notes.push([name, ...rest].join(' '));
    else if (tag === 'XVIO-DOM0-READY') result.dom0ReadySeconds = Number(name);
    else if (tag === 'XVIO-DOM0-DONE') result.done = true;
  }
  return result;
}

/**
 * Builds the rig (cached) and boots Xen once; resolves when the machine powered off.
 * `rig/run.sh` holds a lock across build and boot, so concurrent callers take turns.
 */
export async function runXenRig(): Promise<RigResult> {
  const start = performance.now();
  const boot = await run('run.sh');
  if (boot.code === 90) throw new Error(`rig build failed:\n${boot.output.slice(-4000)}`);
  return { ...parseRigLog(boot.output), log: boot.output, seconds: (performance.now() - start) / 1000 };
}
