const marker = Symbol.for('xvio.cli.error');

/** Why a command could not do what was asked; each code maps to one exit status. */
export type CliErrorCode =
  | 'invalid-arguments' // a flag or argument is missing or malformed
  | 'invalid-config' // the configuration file failed validation
  | 'device-unavailable' // a device package is not part of this build
  | 'feature-unavailable' // a transport, backend or service is not part of this build
  | 'xen-unavailable' // native Xen was asked for and this host cannot provide it
  | 'build-failed' // compose could not bundle or package the backend
  | 'io-failed'; // a file or socket operation failed

const exitCodes: Record<CliErrorCode, number> = {
  'invalid-arguments': 2,
  'invalid-config': 3,
  'device-unavailable': 4,
  'feature-unavailable': 4,
  'xen-unavailable': 5,
  'build-failed': 6,
  'io-failed': 7,
};

/** An error the CLI reports as one line (its message) and a distinct exit status. */
export class CliError extends Error {
  readonly [marker] = true;
  override readonly name = 'CliError';
  readonly code: CliErrorCode;

  constructor(code: CliErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }

  get exitCode(): number {
    return exitCodes[this.code];
  }

  static isInstance(value: unknown): value is CliError {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[marker] === true;
  }
}

/** The message of any thrown value, with its causes, for one-line reports. */
export function describeError(error: unknown): string {
  const parts: string[] = [];
  let current: unknown = error;
  for (let depth = 0; current !== undefined && depth < 4; depth++) {
    const message = current instanceof Error ? current.message : String(current);
    if (!parts.includes(message)) parts.push(message);
    current = current instanceof Error ? current.cause : undefined;
  }
  return parts.join(': ');
}
