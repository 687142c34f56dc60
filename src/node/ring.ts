import { RECORD_HEADER_BYTES, RecordKind, recordKind, recordLength, writeRecordHeader } from "../protocol/record.ts";

/**
 * `ByteRing`: a single-producer/single-consumer ring of records (the 12-byte record header of
 * codec.ts, then the payload) on a SharedArrayBuffer, shared by the node's engine thread and one worker.
 *
 * Positions are byte counters that only grow (kept as uint32, so they wrap at 2^32 and all arithmetic
 * is `>>> 0`). A record is never split by the end of the buffer: when it would be, the producer writes
 * a pad record (RecordKind.Pad) to the end — or, when fewer than 12 bytes are left, the consumer skips them — so
 * the consumer can decode any record in place, straight from shared memory.
 *
 * Wake-ups cost a futex only when someone sleeps: a consumer announces it is about to wait by raising
 * its waiting flag and re-checking, and the producer notifies only when that flag is up (and vice versa
 * for a producer waiting for space). Every access goes through `Atomics`, which are sequentially
 * consistent, so a wake-up cannot be lost between the check and the wait.
 *
 * A consumer waits on a doorbell word, not on the write position: the producer rings it (adds one and
 * notifies) after a commit the waiting consumer must see, and `nudge` rings it without a commit, for a
 * consumer that also waits for something else (the worker's control word: sleep). Whatever rings
 * between the consumer's last check and its wait changes the word it waits on, so that wait returns at
 * once: a nudge can no more be lost than a commit.
 */

// Int32 slots of the header, each on its own 64-byte line so producer and consumer don't share one.
const WRITE = 0;
const READ = 16;
const READER_WAITING = 32;
const WRITER_WAITING = 48;
const CLOSED = 64;
/** Consumer-only: where the record the consumer is working on starts (for the engine after a crash). */
const RUNNING = 72;
/** Rung (incremented) by the producer for a waiting consumer; the consumer waits on it. */
const DOORBELL = 80;
/**
 * The longest any wait on a ring lasts before its caller looks again (callers loop until what they
 * wait for holds). Every wake-up is rung, so this only bounds what a lost one could cost — a look, not
 * a hang. CI hung once on a lost wake-up whose cause was never found; Bun's `Atomics.waitAsync` has had
 * such bugs.
 */
export const WAKE_CHECK_MS = 250;
/**
 * The same bound once a waiter's last QUIET_LOOKS looks in a row found nothing (a second of silence):
 * an idle node's threads then wake once every two seconds per ring instead of four times a second.
 * Being rung, or finding what it waits for, brings the waiter back to WAKE_CHECK_MS.
 */
export const QUIET_WAKE_CHECK_MS = 2000;
const QUIET_LOOKS = 4;
const HEADER_BYTES = 384;

export class ByteRing {
  readonly capacity: number;
  readonly data: Uint8Array;
  readonly view: DataView;
  readonly #state: Int32Array;
  readonly #mask: number;
  /** This side's waits in a row that ran to their bound without being rung (see QUIET_WAKE_CHECK_MS). */
  #quietLooks = 0;

  /** Wraps a buffer made by `ByteRing.allocate` (in either thread). */
  constructor(readonly buffer: SharedArrayBuffer) {
    this.capacity = buffer.byteLength - HEADER_BYTES;
    if (this.capacity <= 0 || (this.capacity & (this.capacity - 1)) !== 0) {
      throw new RangeError("ByteRing capacity must be a power of two");
    }
    this.#mask = this.capacity - 1;
    this.#state = new Int32Array(buffer, 0, HEADER_BYTES / 4);
    this.data = new Uint8Array(buffer, HEADER_BYTES, this.capacity);
    this.view = new DataView(buffer, HEADER_BYTES, this.capacity);
  }

  /** A shared buffer for a ring of at least `capacity` bytes (rounded up to a power of two, at least 4 KiB). */
  static allocate(capacity: number): SharedArrayBuffer {
    let size = 4096;
    while (size < capacity) size *= 2;
    return new SharedArrayBuffer(HEADER_BYTES + size);
  }

  /** The largest payload a single record may have in this ring; larger items take the oversize path. */
  get maxPayload(): number {
    return (this.capacity >>> 2) - RECORD_HEADER_BYTES;
  }

  // ---- producer side ----------------------------------------------------------------------------

  /** Bytes committed by the producer so far (mod 2^32). */
  get writePosition(): number {
    return Atomics.load(this.#state, WRITE) >>> 0;
  }

  /** Bytes released by the consumer so far (mod 2^32). */
  get readPosition(): number {
    return Atomics.load(this.#state, READ) >>> 0;
  }

  /** Bytes in use (written and not yet released). */
  get used(): number {
    return (this.writePosition - this.readPosition) >>> 0;
  }

  /**
   * Where a record of `size` bytes (header included) can be written now, as an offset into `data`, or
   * -1 when there is not enough room. `position` is the producer's uncommitted write position; the
   * returned offset may follow a pad this call wrote at the end of the buffer (see `padTo`).
   */
  reserve(position: number, size: number): number {
    const free = this.capacity - ((position - this.readPosition) >>> 0);
    const offset = position & this.#mask;
    const toEnd = this.capacity - offset;
    if (size <= toEnd) return size <= free ? offset : -1;
    // Wrap: the tail up to the end is wasted, so the record needs toEnd more bytes of room.
    return size + toEnd <= free ? 0 : -1;
  }

  /** Bytes that can be written in one piece at `position` now: the free room, up to the buffer's end. */
  roomAt(position: number): number {
    const free = this.capacity - ((position - this.readPosition) >>> 0);
    const toEnd = this.capacity - (position & this.#mask);
    return free < toEnd ? free : toEnd;
  }

  /**
   * Writes what a wrap needs at `position` (a pad record, or nothing when fewer than 12 bytes are
   * left) and returns the position at the start of the buffer. Call only when `reserve` wrapped.
   */
  padTo(position: number): number {
    const offset = position & this.#mask;
    const toEnd = this.capacity - offset;
    if (toEnd >= RECORD_HEADER_BYTES) {
      writeRecordHeader(this.view, offset, RecordKind.Pad, 0, 0, 0, toEnd - RECORD_HEADER_BYTES);
    }
    return (position + toEnd) >>> 0;
  }

  /**
   * Writes one whole record (payload `bytes[start, end)`) if it fits; returns the new uncommitted
   * position, or -1 when the ring is too full. Nothing is visible to the consumer until `commit`.
   */
  tryWrite(
    position: number,
    kind: number,
    stage: number,
    flags: number,
    id: number,
    bytes: Uint8Array,
    start = 0,
    end = bytes.length,
  ): number {
    const size = RECORD_HEADER_BYTES + (end - start);
    const offset = this.reserve(position, size);
    if (offset < 0) return -1;
    if (offset === 0 && (position & this.#mask) !== 0) position = this.padTo(position);
    writeRecordHeader(this.view, offset, kind, stage, flags, id, end - start);
    this.data.set(
      start === 0 && end === bytes.length ? bytes : bytes.subarray(start, end),
      offset + RECORD_HEADER_BYTES,
    );
    return (position + size) >>> 0;
  }

  /** Makes everything written up to `position` visible, and wakes the consumer if it sleeps. */
  commit(position: number): void {
    Atomics.store(this.#state, WRITE, position | 0);
    if (Atomics.load(this.#state, READER_WAITING) !== 0) this.#ring();
  }

  #ring(): void {
    Atomics.add(this.#state, DOORBELL, 1);
    Atomics.notify(this.#state, DOORBELL);
  }

  // ---- consumer side ----------------------------------------------------------------------------

  /**
   * The consumer position of the first record at or after `position`, skipping pads and wrap gaps, or
   * -1 when no record is committed there yet. Its bytes are at `offsetOf(that position)` in `data`.
   */
  peek(position: number): number {
    for (;;) {
      if (this.writePosition === position) return -1;
      const offset = position & this.#mask;
      const toEnd = this.capacity - offset;
      if (toEnd < RECORD_HEADER_BYTES || recordKind(this.view, offset) === RecordKind.Pad) {
        position = (position + toEnd) >>> 0;
        continue;
      }
      return position;
    }
  }

  /** Offset in `data` of consumer or producer position `position`. */
  offsetOf(position: number): number {
    return position & this.#mask;
  }

  /** Size in bytes (header included) of the record at `offset`. */
  recordSize(offset: number): number {
    return RECORD_HEADER_BYTES + recordLength(this.view, offset);
  }

  /** The position just past the record at `position`. */
  after(position: number): number {
    return (position + this.recordSize(this.offsetOf(position))) >>> 0;
  }

  /** Notes that the consumer now works on the record at `position` (one plain store per record). */
  markRunning(position: number): void {
    Atomics.store(this.#state, RUNNING, position | 0);
  }

  /** The position the consumer last marked as running. */
  get runningPosition(): number {
    return Atomics.load(this.#state, RUNNING) >>> 0;
  }

  /** Gives the bytes up to `position` back to the producer, and wakes it if it waits for room. */
  release(position: number): void {
    Atomics.store(this.#state, READ, position | 0);
    if (Atomics.load(this.#state, WRITER_WAITING) !== 0) Atomics.notify(this.#state, READ);
  }

  // ---- waiting ----------------------------------------------------------------------------------

  /**
   * Resolves when the producer commits past `position` (or the ring is closed), or after `timeoutMs`.
   * Never blocks the thread: it uses `Atomics.waitAsync`, so the caller's event loop keeps serving
   * messages meanwhile.
   */
  waitForData(position: number, timeoutMs?: number): Promise<unknown> | undefined {
    return this.#waitAsync(READER_WAITING, DOORBELL, () => this.writePosition !== position, timeoutMs);
  }

  /**
   * Like `waitForData`, but also resolves when `other()` holds: `other` is checked after the waiting
   * flag is up, and whoever makes it true must then `nudge` this ring, so the wake-up is never lost.
   */
  waitForDataOr(position: number, other: () => boolean, timeoutMs?: number): Promise<unknown> | undefined {
    return this.#waitAsync(READER_WAITING, DOORBELL, () => this.writePosition !== position || other(), timeoutMs);
  }

  /** Resolves when the consumer releases bytes (or the ring is closed), or after `timeoutMs`; for a producer out of room. */
  waitForRoom(readPosition: number, timeoutMs?: number): Promise<unknown> | undefined {
    return this.#waitAsync(WRITER_WAITING, READ, () => this.readPosition !== readPosition, timeoutMs);
  }

  /**
   * Returns undefined when the condition already holds, so the caller can go on without awaiting. Without
   * `timeoutMs`, the wait lasts the safety bound: WAKE_CHECK_MS, or QUIET_WAKE_CHECK_MS while quiet.
   */
  #waitAsync(flag: number, slot: number, ready: () => boolean, timeoutMs?: number): Promise<unknown> | undefined {
    if (ready() || this.closed) {
      this.#quietLooks = 0;
      return undefined;
    }
    Atomics.store(this.#state, flag, 1);
    const observed = Atomics.load(this.#state, slot);
    if (ready() || this.closed) {
      Atomics.store(this.#state, flag, 0);
      this.#quietLooks = 0;
      return undefined;
    }
    const bound = timeoutMs ?? (this.quiet ? QUIET_WAKE_CHECK_MS : WAKE_CHECK_MS);
    const result = Atomics.waitAsync(this.#state, slot, observed, bound);
    const clear = (value: unknown) => {
      Atomics.store(this.#state, flag, 0);
      this.#quietLooks = value === "timed-out" ? this.#quietLooks + 1 : 0;
      return value;
    };
    return result.async ? result.value.then(clear) : Promise.resolve(clear(result.value));
  }

  /** Whether this side's next wait with the default bound lasts QUIET_WAKE_CHECK_MS (it found nothing of late). */
  get quiet(): boolean {
    return this.#quietLooks >= QUIET_LOOKS;
  }

  /** Whether the producer is parked in `waitForRoom` (its consumer holds it back). */
  get producerWaiting(): boolean {
    return Atomics.load(this.#state, WRITER_WAITING) !== 0;
  }

  /** Wakes a consumer parked in `waitForData` without writing anything, so it looks at its control state. */
  nudge(): void {
    this.#ring();
  }

  /** Marks the ring closed and wakes both sides, so nobody stays parked on it (used on reset). */
  close(): void {
    Atomics.store(this.#state, CLOSED, 1);
    this.#ring();
    Atomics.notify(this.#state, READ);
  }

  get closed(): boolean {
    return Atomics.load(this.#state, CLOSED) !== 0;
  }
}
