/**
 * Memory for messages and items of megabytes, kept once nothing reads it any more, to take the next
 * ones. A fresh buffer is faulted in page by page as it is written (about 10 µs a page on a virtual
 * machine): on items of megabytes that was most of a node's socket thread's time, and of a root's.
 *
 * A buffer is free again once every holder let go: whoever takes it holds it (`take`), anyone who keeps
 * a view of it beyond that adds a hold (`hold`), and each lets go once done (`release`). On a node: a
 * feed of more than 4 MiB joined from its parts, until every record of it went to a ring or a worker, and
 * each item a worker reads there in place, until it is done; an item of 1 to 4 MiB copied out of its frame,
 * until it is done. On a root: a results message joined from its parts, until it is handled, and each
 * output of it held for its item's Done (exactly-once), until it is handed out or dropped. Items and
 * outputs are decoded with their binary values copied out (see `decode`), so what was decoded never
 * reads it. A buffer never let go (a feed refused, a connection failed) is simply left to
 * the garbage collector.
 */
export class KeptBuffers {
  /** Buffers kept for the next takers, smallest first. */
  readonly #spare: ArrayBufferLike[] = [];
  #spareBytes = 0;
  /** Buffers handed out, and how many holders each has. */
  readonly #holders = new WeakMap<ArrayBufferLike, number>();

  /**
   * @param allocate a buffer of `size` bytes (they need not be zeroed: a taker writes them all)
   * @param maxSpareBytes the most kept for the next takers; beyond it, the largest kept are left to the GC
   */
  constructor(
    readonly allocate: (size: number) => ArrayBufferLike,
    readonly maxSpareBytes = 64 * 1024 * 1024,
  ) {}

  /** Bytes kept for the next takers. */
  get spareBytes(): number {
    return this.#spareBytes;
  }

  /**
   * `length` bytes, held by the caller until its `release`: the start of a kept buffer that holds them
   * and is less than twice their size, or a new buffer of their size.
   */
  take(length: number): Uint8Array {
    const spare = this.#spare;
    for (let at = 0; at < spare.length; at++) {
      const size = spare[at]!.byteLength;
      if (size < length) continue;
      if (size >= 2 * length) break;
      const [buffer] = spare.splice(at, 1);
      this.#spareBytes -= size;
      this.#holders.set(buffer!, 1);
      return new Uint8Array(buffer!, 0, length);
    }
    const buffer = this.allocate(length);
    this.#holders.set(buffer, 1);
    return new Uint8Array(buffer, 0, length);
  }

  /** One more holder of the buffer under `bytes`, if it came from here. */
  hold(bytes: Uint8Array): void {
    const holders = this.#holders.get(bytes.buffer);
    if (holders !== undefined) this.#holders.set(bytes.buffer, holders + 1);
  }

  /** A holder of the buffer under `bytes` lets go; the last one makes it free for the next takers. */
  release(bytes: Uint8Array): void {
    const buffer = bytes.buffer;
    const holders = this.#holders.get(buffer);
    if (holders === undefined) return; // not from here, or already free
    if (holders > 1) {
      this.#holders.set(buffer, holders - 1);
      return;
    }
    this.#holders.delete(buffer);
    const size = buffer.byteLength;
    if (size > this.maxSpareBytes) return;
    const spare = this.#spare;
    // The latest is kept over larger ones kept before: the items that come now are like it (one 64 MB
    // item once must not keep the place of every later 8 MiB one).
    while (this.#spareBytes + size > this.maxSpareBytes) this.#spareBytes -= spare.pop()!.byteLength;
    let at = spare.length;
    while (at > 0 && spare[at - 1]!.byteLength > size) at--;
    spare.splice(at, 0, buffer);
    this.#spareBytes += size;
  }
}

/** Shared memory (a node's: its workers read oversize items there). */
export const sharedMemory = (size: number): ArrayBufferLike => new SharedArrayBuffer(size);

/** Memory of this thread, not zeroed (a root's: results are joined there). */
export const ownMemory = (size: number): ArrayBufferLike => Buffer.allocUnsafeSlow(size).buffer;
