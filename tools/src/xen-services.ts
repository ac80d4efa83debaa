import type { Logger } from 'pino';
import { CliError, describeError } from './cli-errors.js';
import { type HostView, nativeXenProblems, runHostChecks } from './doctor-checks.js';
import { loadOptionalModule } from './optional-modules.js';

/** The Xen services package, loaded on first use so that a build without it still runs vhost-user. */
export function loadXenModule(): Promise<Record<string, unknown>> {
  return loadOptionalModule('xen');
}

function exported<T>(module: Record<string, unknown>, names: readonly string[]): T | undefined {
  for (const name of names) {
    const value = module[name];
    if (typeof value === 'function') return value as T;
  }
  return undefined;
}

/**
 * Refuses to go on unless this host can serve guests through real Xen. Uses the Xen
 * package's own probe when the build has one, and the doctor's checks otherwise.
 */
export async function requireNativeXen(host: HostView, useXenProbe = true): Promise<void> {
  let problems: string[] | undefined;
  if (useXenProbe) {
    try {
      const module = await loadXenModule();
      const probe = exported<() => unknown>(module, ['probeXenHost']);
      if (probe) problems = probeProblems((await probe()) as XenHostProbeLike);
    } catch (error) {
      if (!CliError.isInstance(error)) throw error;
    }
  }
  problems ??= nativeXenProblems(await runHostChecks(host));
  if (problems.length > 0) {
    throw new CliError(
      'xen-unavailable',
      `native Xen is not available on this host:\n  ${problems.join('\n  ')}\nrun 'xvio doctor' for what to fix, or choose the simulator (xen = "sim")`,
    );
  }
}

/** The parts of @xvio/xen's `probeXenHost()` answer the CLI reads. */
interface XenHostProbeLike {
  readonly hypervisor?: string;
  readonly isXenDomain?: boolean;
  readonly services?: Readonly<
    Record<
      string,
      {
        readonly available: boolean;
        readonly missing: readonly { kind: string; name: string; package?: string }[];
      }
    >
  >;
}

/** One line per thing the Xen package could not open, in its own terms. */
export function probeProblems(probe: XenHostProbeLike): string[] {
  const problems: string[] = [];
  if (probe.isXenDomain === false) {
    problems.push(
      probe.hypervisor === undefined
        ? 'hypervisor: not running under Xen (/sys/hypervisor/type is missing)'
        : `hypervisor: not running under Xen (/sys/hypervisor/type is ${JSON.stringify(probe.hypervisor)})`,
    );
  }
  for (const [service, state] of Object.entries(probe.services ?? {})) {
    if (state.available) continue;
    const missing = state.missing
      .map((item) => `${item.kind} ${item.name}${item.package ? ` (package ${item.package})` : ''}`)
      .join(', ');
    problems.push(`${service}: unavailable${missing ? ` (missing ${missing})` : ''}`);
  }
  return problems;
}

export interface RunningXenstored {
  readonly socketPath: string;
  close(): Promise<void>;
}

/** Starts the simulated xenstored on a unix socket (the Xen package provides it). */
export async function startSimulatedXenstored(
  socketPath: string,
  log: Logger,
  /** Serve this store (a running simulator's) instead of a new one. */
  store?: unknown,
): Promise<RunningXenstored> {
  const module = await loadXenModule();
  const start = exported<
    (options: { socketPath: string; log?: (line: string) => void; xenstored?: unknown }) => unknown
  >(module, ['startXenstoredServer', 'startXenstored', 'serveXenstored']);
  if (!start) {
    throw new CliError(
      'feature-unavailable',
      'the simulated xenstored is not available in this build (@xvio/xen exports no startXenstoredServer)',
    );
  }
  let server: { close?: () => unknown; stop?: () => unknown };
  try {
    // One debug line per request: the store's own log is chatty by design.
    server = (await start({
      socketPath,
      log: (line) => log.debug(line),
      ...(store !== undefined ? { xenstored: store } : {}),
    })) as typeof server;
  } catch (error) {
    throw new CliError('io-failed', `cannot listen on ${socketPath}: ${describeError(error)}`, {
      cause: error,
    });
  }
  return {
    socketPath,
    close: async () => {
      await (server.close ?? server.stop)?.call(server);
    },
  };
}
