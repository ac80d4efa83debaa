import { CliError, describeError } from './cli-errors.js';

/** Packages some commands need and a build may leave out. */
export type OptionalModule = 'xen' | 'vhost-user';

const descriptions: Record<OptionalModule, { specifier: string; what: string }> = {
  xen: { specifier: '@xvio/xen', what: 'the Xen services (@xvio/xen)' },
  'vhost-user': { specifier: '@xvio/transport/vhost-user', what: 'the vhost-user backend' },
};

type Loader = () => Promise<Record<string, unknown>>;

const loaders = new Map<OptionalModule, Loader | null>();

/**
 * A composed backend registers its statically bundled modules here (or `null` for a module
 * it left out); the workspace CLI imports them by name on first use.
 */
export function provideOptionalModule(name: OptionalModule, loader: Loader | null): void {
  loaders.set(name, loader);
}

export async function loadOptionalModule(name: OptionalModule): Promise<Record<string, unknown>> {
  const { specifier, what } = descriptions[name];
  const provided = loaders.get(name);
  if (provided === null)
    throw new CliError(
      'feature-unavailable',
      `${what} is not available in this build (not composed into it)`,
    );
  try {
    if (provided) return await provided();
    // A variable specifier: a package that is not there fails here, at run time, with a clear message.
    const dynamic: string = specifier;
    return (await import(dynamic)) as Record<string, unknown>;
  } catch (error) {
    throw new CliError(
      'feature-unavailable',
      `${what} is not available in this build (${describeError(error).split('\n')[0]})`,
      {
        cause: error,
      },
    );
  }
}
