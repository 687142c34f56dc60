/**
 * Memory for messages and items of megabytes, kept once nothing reads it any more, to take the next
 * ones. A fresh buffer is faulted in page by page as it is written (about 10 µs a page on a virtual
 * machine): on items of megabytes that was most of a node's socket thread's time, and of a root's.
 *
 * A buffer is free again once every holder let go: whoever takes it holds it (`take`), anyone who keeps
 * a view of it beyond that adds a hold (`hold`), and each lets go once done (`release`). On a node: a
 * feed of more than 4 MiB joined from its parts, until every record of it went to a ring or a worker, and
 * each item a worker reads there in place, until it is done; an item of 1 to 4 MiB copied out of its frame,
 * until it is done. On a root: a results message joined from its parts, or a results frame assembled
 * from several socket reads, until it is handled, and each output of it held for its item's Done
 * (exactly-once), until it is handed out or dropped. Items and
 * outputs are decoded with their binary values copied out (see `decode`), so what was decoded never
 * reads it. A buffer never let go (a feed refused, a connection failed) is simply left to
 * the garbage collector.
 */
export class KeptBuffers {
  /** Buffers of up to SMALL_CLASS_BYTES kept for the next takers, smallest first; then larger ones. */
  readonly #small = new SpareList();
  readonly #large = new SpareList();
  /** Buffers handed out, and how many holders each has. */
  readonly #holders = new WeakMap<ArrayBufferLike, number>();

  /**
   * @param allocate a buffer of `size` bytes (they need not be zeroed: a taker writes them all)
   * @param maxSpareBytes the most kept of buffers over SMALL_CLASS_BYTES; of smaller ones, the least of it
   *   and SMALL_CLASS_SPARE_BYTES. Past either, the largest kept of that class are left to the GC.
   */
  constructor(
    readonly allocate: (size: number) => ArrayBufferLike,
    readonly maxSpareBytes = 64 * 1024 * 1024,
  ) {}

  /** Bytes kept for the next takers. */
  get spareBytes(): number {
    return this.#small.bytes + this.#large.bytes;
  }

  /**
   * `length` bytes, held by the caller until its `release`: the start of a kept buffer that holds them
   * and is less than twice their size, or a new buffer of their size.
   */
  take(length: number): Uint8Array {
    const buffer = this.#small.take(length) ?? this.#large.take(length) ?? this.allocate(length);
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
    // Two classes, each bounded on its own: the frames and items of a few megabytes that come and go
    // all the time must not push out the one buffer a stream of much larger messages is joined in.
    if (buffer.byteLength <= SMALL_CLASS_BYTES) {
      this.#small.keep(buffer, Math.min(this.maxSpareBytes, SMALL_CLASS_SPARE_BYTES));
    } else this.#large.keep(buffer, this.maxSpareBytes);
  }
}

/** Buffers up to this size are kept apart from larger ones, within a bound of their own. */
const SMALL_CLASS_BYTES = 8 * 1024 * 1024;
/** The most kept of buffers up to SMALL_CLASS_BYTES. */
const SMALL_CLASS_SPARE_BYTES = 16 * 1024 * 1024;

/** Kept buffers of one class, smallest first, and their bytes. */
class SpareList {
  readonly #buffers: ArrayBufferLike[] = [];
  bytes = 0;

  /** A kept buffer of `length` bytes or more and less than twice that, taken out of the list. */
  take(length: number): ArrayBufferLike | undefined {
    const buffers = this.#buffers;
    for (let at = 0; at < buffers.length; at++) {
      const size = buffers[at]!.byteLength;
      if (size < length) continue;
      if (size >= 2 * length) return undefined;
      const [buffer] = buffers.splice(at, 1);
      this.bytes -= size;
      return buffer;
    }
    return undefined;
  }

  /**
   * Keeps `buffer`, within `maxBytes`: the latest is kept over larger ones kept before, as the items that
   * come now are like it (one 64 MB item once must not keep the place of every later 20 MB one).
   */
  keep(buffer: ArrayBufferLike, maxBytes: number): void {
    const size = buffer.byteLength;
    if (size > maxBytes) return;
    const buffers = this.#buffers;
    while (this.bytes + size > maxBytes) this.bytes -= buffers.pop()!.byteLength;
    let at = buffers.length;
    while (at > 0 && buffers[at - 1]!.byteLength > size) at--;
    buffers.splice(at, 0, buffer);
    this.bytes += size;
  }
}

/** Shared memory (a node's: its workers read oversize items there). */
export const sharedMemory = (size: number): ArrayBufferLike => new SharedArrayBuffer(size);

/** Memory of this thread, not zeroed (a root's: results are joined there). */
export const ownMemory = (size: number): ArrayBufferLike => Buffer.allocUnsafeSlow(size).buffer;
