/**
 * A bounded async queue: `push` returns a promise while the queue is full, so a producer that awaits
 * it is held back by a slow consumer. Used to turn the root's outputs into an async iterable.
 */
export class OutputChannel<T> implements AsyncIterable<T> {
  readonly #items: T[] = [];
  /** Each item's size as the producer gave it (its encoded bytes), beside it in `#items`. */
  readonly #sizes: number[] = [];
  /** The sizes of the items waiting, summed. */
  #bytes = 0;
  #head = 0;
  #ended = false;
  /** Set when the consumer left: what is pushed from then on is dropped, and no producer waits. */
  #closed = false;
  #failure: unknown;
  #wakeConsumer: (() => void) | undefined;
  #wakeProducers: Array<() => void> = [];

  /**
   * Full at `capacity` items or at `maxBytes` of their sizes, whichever comes first (an item larger
   * than `maxBytes` still goes, alone).
   */
  constructor(
    readonly capacity = 1024,
    readonly maxBytes = Number.POSITIVE_INFINITY,
  ) {}

  /** Adds a value of `bytes` (its size, for `maxBytes`); resolves at once, or once the consumer has made room. */
  push(value: T, bytes = 0): Promise<void> | undefined {
    if (this.#closed) return undefined;
    this.#items.push(value);
    this.#sizes.push(bytes);
    this.#bytes += bytes;
    this.#wake();
    if (this.#hasRoom()) return undefined;
    return new Promise((resolve) => this.#wakeProducers.push(resolve));
  }

  #hasRoom(): boolean {
    return this.#items.length - this.#head < this.capacity && this.#bytes < this.maxBytes;
  }

  end(): void {
    this.#ended = true;
    this.#wake();
  }

  /** The consumer is gone: drops what waits, releases every waiting producer, and drops later pushes. */
  close(): void {
    this.#closed = true;
    this.#ended = true;
    this.#items.length = 0;
    this.#sizes.length = 0;
    this.#bytes = 0;
    this.#head = 0;
    this.#releaseProducers();
    this.#wake();
  }

  /** Whether the consumer left (`close`). */
  get closed(): boolean {
    return this.#closed;
  }

  /** The producer failed: the consumer gets what waits, then `error`. */
  fail(error: unknown): void {
    this.#failure = error;
    this.#ended = true;
    this.#wake();
  }

  /**
   * The consumer's loop is to end now (its signal aborted): its next pull throws `reason`, whatever
   * waits is dropped, and so is what is pushed from then on.
   */
  abort(reason: unknown): void {
    this.#failure = reason;
    this.close();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    for (;;) {
      if (this.#closed && this.#failure !== undefined) throw this.#failure;
      if (this.#head < this.#items.length) {
        const value = this.#items[this.#head]!;
        this.#bytes -= this.#sizes[this.#head]!;
        this.#items[this.#head++] = undefined as T;
        if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
          this.#items.splice(0, this.#head);
          this.#sizes.splice(0, this.#head);
          this.#head = 0;
        }
        if (this.#hasRoom()) this.#releaseProducers();
        yield value;
        continue;
      }
      if (this.#failure !== undefined) throw this.#failure;
      if (this.#ended) return;
      await new Promise<void>((resolve) => (this.#wakeConsumer = resolve));
    }
  }

  #wake(): void {
    const wake = this.#wakeConsumer;
    this.#wakeConsumer = undefined;
    wake?.();
  }

  #releaseProducers(): void {
    const producers = this.#wakeProducers;
    this.#wakeProducers = [];
    for (const wake of producers) wake();
  }
}
