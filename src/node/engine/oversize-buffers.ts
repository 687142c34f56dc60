/**
 * Shared memory for items too large for a worker's input ring, kept once nothing reads it any more, to
 * take the next such items. A fresh buffer is faulted in page by page as it is written (about 10 µs a
 * page on a virtual machine): on items of megabytes that was most of a node's socket thread's time.
 *
 * Two kinds of buffers come from here: one per item of 1 to 4 MiB, which `InputDispatcher` copies out of
 * its feed frame (`take`), and one per feed of more than 4 MiB, which arrived in parts and was joined
 * here (`takeJoined`), its large items then read in place. A buffer is free again once every item read
 * from it is done and, for a joined feed, once every record of it went to a ring or a worker: each of
 * those holds it (`hold`) until it lets go (`release`). Items are decoded with their binary values copied
 * out (see `decode`), so a done item leaves nothing that reads its buffer. A buffer never let go (a feed
 * refused, a connection failed) is simply left to the garbage collector.
 */
export class OversizeBuffers {
  /** Buffers kept for the next items, smallest first. */
  readonly #spare: SharedArrayBuffer[] = [];
  #spareBytes = 0;
  /** Buffers handed out, and how many holders each has (a feed not yet all dispatched, items not done). */
  readonly #holders = new WeakMap<SharedArrayBuffer, number>();

  constructor(readonly maxSpareBytes = 64 * 1024 * 1024) {}

  /** Bytes kept for the next items. */
  get spareBytes(): number {
    return this.#spareBytes;
  }

  /** `length` bytes for one oversize item, held by it until its `release`. */
  take(length: number): Uint8Array {
    return this.#buffer(length);
  }

  /** `length` bytes to join a feed's parts in, held by the feed until it is all dispatched (`release`). */
  takeJoined(length: number): Uint8Array {
    return this.#buffer(length);
  }

  /** One more holder of the buffer under `bytes` (an item read in place from a joined feed), if it is ours. */
  hold(bytes: Uint8Array): void {
    const buffer = bytes.buffer as SharedArrayBuffer;
    const holders = this.#holders.get(buffer);
    if (holders !== undefined) this.#holders.set(buffer, holders + 1);
  }

  /** A holder of the buffer under `bytes` lets go; the last one makes it free for the next items. */
  release(bytes: Uint8Array): void {
    const buffer = bytes.buffer as SharedArrayBuffer;
    const holders = this.#holders.get(buffer);
    if (holders === undefined) return; // not ours
    if (holders > 1) {
      this.#holders.set(buffer, holders - 1);
      return;
    }
    this.#holders.delete(buffer);
    const size = buffer.byteLength;
    if (this.#spareBytes + size > this.maxSpareBytes) return;
    const spare = this.#spare;
    let at = spare.length;
    while (at > 0 && spare[at - 1]!.byteLength > size) at--;
    spare.splice(at, 0, buffer);
    this.#spareBytes += size;
  }

  /**
   * The start of a kept buffer that holds `length` bytes and is less than twice their size, or a new
   * buffer of their size; with one holder.
   */
  #buffer(length: number): Uint8Array {
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
    const buffer = new SharedArrayBuffer(length);
    this.#holders.set(buffer, 1);
    return new Uint8Array(buffer);
  }
}
