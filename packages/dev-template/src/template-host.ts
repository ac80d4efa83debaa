/**
 * The host side of the template device: what turns a request's payload into the answer.
 * A real device puts its heavy host dependency here (a console's terminal, an entropy
 * source, a tap device) behind an interface, with an in-memory host that really works for
 * tests and demos.
 */
export interface TemplateHost {
  /**
   * Writes the transformed `input` into `output` (same length). Throwing is a host failure:
   * the device answers TEMPLATE_STATUS_HOST_ERROR and keeps running.
   */
  transform(input: Uint8Array, output: Uint8Array): void;
}

/** A host that XORs every byte with a key (0x20 flips ASCII letter case) and remembers what it served. */
export class MemoryTemplateHost implements TemplateHost {
  /** Payloads served, oldest first, at most `historyLimit` kept (never unbounded). */
  readonly history: Uint8Array[] = [];
  /** When set, the next `transform` throws it once (to test host failures). */
  failNext: Error | undefined;

  constructor(
    readonly key = 0x20,
    private readonly historyLimit = 16,
  ) {
    if (!Number.isInteger(key) || key < 0 || key > 0xff) throw new RangeError(`key ${key} is not a byte`);
  }

  transform(input: Uint8Array, output: Uint8Array): void {
    const failure = this.failNext;
    if (failure) {
      this.failNext = undefined;
      throw failure;
    }
    for (let i = 0; i < input.length; i++) output[i] = input[i]! ^ this.key;
    this.history.push(input.slice());
    if (this.history.length > this.historyLimit) this.history.shift();
  }
}
