import { ItemTooLargeError } from "../errors.ts";
import { type RecordBatchBuilder, byteArrayHead, encodeDeclined, stringHead } from "../protocol/codec.ts";
import { KeptBuffers } from "../protocol/kept-buffers.ts";
import { RECORD_HEADER_BYTES, RecordKind, recordLength, setRecordId, writeRecordHeader } from "../protocol/record.ts";
import { SMALL_OUTPUT_BYTES, SmallTarget, encodeSmallInto } from "../protocol/small-msgpack.ts";

/**
 * Bytes per chunk of queued records (an item larger than a chunk gets one of its own). A chunk lives
 * until its last record is done, so an item in flight for long keeps its whole chunk: small chunks keep
 * that small, and a new one every few hundred items costs nothing measurable.
 */
const CHUNK_BYTES = 64 * 1024;
/**
 * Chunks kept, once all their records are done, to be written again: a fresh buffer is faulted in
 * page by page (about 10 µs a page on a virtual machine), a feed of megabytes a second would pay that
 * for every byte. Bounded: at most this many, 2 MiB.
 */
const SPARE_CHUNKS = 32;
/**
 * An item larger than a chunk gets one of its own, of the next power of two up to this size (then of its
 * exact size: it holds that item alone), in memory kept once the chunks before it were done (see
 * KeptBuffers: up to 64 MiB, the latest kept over larger ones kept before). Items of 8 MiB went at 189
 * MB/s through 2 nodes when each had fresh memory, the root's time mostly page faults; in kept memory,
 * at the rate of 2 MiB items (about 360 MB/s).
 */
const LARGE_CLASS_MAX = 4 * 1024 * 1024;
/**
 * A string longer than this is past the small writer's reach (it needs room for 3 bytes a character):
 * its UTF-8 is written into its chunk directly (see `#appendHeaded`).
 */
const LONG_STRING = Math.floor((SMALL_OUTPUT_BYTES - 3) / 3);
/** Bytes (a Buffer or a Uint8Array) longer than this are copied into their chunk directly (see `#appendHeaded`). */
const LONG_BYTES = SMALL_OUTPUT_BYTES;
/** A record's reference is `chunk serial × OFFSETS + offset`: offsets stay below 2^24 (see `#chunkFor`). */
const OFFSETS = 2 ** 24;

/** Records encoded into one buffer; sent from `sendAt` on, in order. */
class Chunk {
  readonly view: DataView;
  readonly target: SmallTarget;
  /** A payload of it was lent out (`takeBack`): it must never be written again, only let go. */
  lent = false;
  /** Bytes written. */
  end = 0;
  /** Where the next record to send starts. */
  sendAt = 0;
  /** Records not sent yet. */
  queued = 0;
  /** Records sent and neither done nor taken back. */
  outstanding = 0;
  /** When its last record was sent (`performance.now()`), or -1 while records wait. */
  sentOutAt = -1;

  constructor(
    public serial: number,
    readonly bytes: Uint8Array,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.target = new SmallTarget(bytes);
  }

  /** The chunk, empty, under a new serial (its old records are all done). */
  reuse(serial: number): Chunk {
    this.serial = serial;
    this.end = 0;
    this.sendAt = 0;
    this.sentOutAt = -1;
    return this;
  }
}

/**
 * The root's queue of fed items, kept as records (the 12-byte header, then the item's MessagePack) in
 * chunks of 64 KiB, ready to be copied into feed frames a span at a time. An item is encoded straight
 * into its chunk: no bytes of its own, no copy of its own. A sent record stays where it is until its
 * item is done, so the ledger can name it by a number (`ref`) and a lost node's items can be re-sent
 * from there. A chunk is dropped when all its records are sent and done and a newer chunk exists.
 */
export class FeedQueue {
  /** `clock`: milliseconds, as `performance.now()` (a test may drive it by hand). */
  constructor(readonly clock: () => number = () => performance.now()) {}

  /** Chunks with records, by serial: those not yet sent, and those sent and not done. */
  readonly #chunks = new Map<number, Chunk>();
  /** Chunks with records still to send, oldest first, from `#head`. */
  #sending: Chunk[] = [];
  #head = 0;
  #tail: Chunk | undefined;
  /** The chunk `#chunkAt` found last. */
  #lastAsked: Chunk | undefined;
  /** Chunks let go, to be written again (see SPARE_CHUNKS); the memory of larger ones (LARGE_CLASS_MAX). */
  readonly #spare: Chunk[] = [];
  readonly #large = new KeptBuffers((size) => new ArrayBuffer(size));
  /** Tails with all their records done (or none) that the current appends replaced (see `#chunkFor`). */
  #retired: Chunk[] = [];
  #nextSerial = 1;
  #queued = 0;
  #queuedBytes = 0;
  /** The largest item, encoded, that the queue takes (see `ItemTooLargeError`). */
  maxItemBytes = Number.POSITIVE_INFINITY;

  /** Records not sent yet. */
  get length(): number {
    return this.#queued;
  }

  /** Payload bytes not sent yet. */
  get bytes(): number {
    return this.#queuedBytes;
  }

  /** Chunks held: with records to send, or sent and not done (and the one being filled). */
  get liveChunks(): number {
    return this.#chunks.size;
  }

  /**
   * Encodes and queues `values`, in order. A value that cannot be carried as itself throws an
   * `ItemEncodeError` naming its index (counted from `firstIndex`) and the path to what is wrong
   * (`items[3].meta.cb: a function cannot be sent`), one larger than `maxItemBytes` an
   * `ItemTooLargeError`, and then none of `values` is queued.
   */
  appendValues(values: readonly unknown[], firstIndex = 0): void {
    const tail = this.#tail;
    const mark: Mark = {
      tail,
      end: tail?.end ?? 0,
      tailQueued: tail?.queued ?? 0,
      queued: this.#queued,
      bytes: this.#queuedBytes,
      sending: this.#sending.length,
    };
    for (let index = 0; index < values.length; index++) {
      try {
        this.#appendValue(values[index], firstIndex + index);
      } catch (error) {
        this.#rollBack(mark);
        throw error;
      }
    }
    this.#keepRetired();
  }

  /** Queues items already encoded (copied into the queue); one larger than `maxItemBytes` throws first, and none is queued. */
  appendBytes(items: readonly Uint8Array[]): void {
    for (let index = 0; index < items.length; index++) this.#checkSize(items[index]!.length, index);
    for (const bytes of items) this.#appendEncoded(bytes);
    this.#keepRetired();
  }

  /**
   * Moves queued records into `batch`, oldest first: up to `count` of them, no more once `frameBytes`
   * record bytes (headers included) are in, and never past `budget` record bytes — but for the first
   * record when `firstMayExceed` (a node with fewer items than workers: that item goes by itself). The first
   * record always goes if it fits the budget, whatever `frameBytes`. `assign(ref)` gives each its id,
   * written into the record as it goes. Returns the record bytes moved.
   */
  send(
    batch: RecordBatchBuilder,
    count: number,
    frameBytes: number,
    assign: (ref: number) => number,
    budget = Number.POSITIVE_INFINITY,
    firstMayExceed = true,
  ): number {
    let bytes = 0;
    let moved = 0;
    let full = false;
    while (!full && moved < count && this.#head < this.#sending.length) {
      const chunk = this.#sending[this.#head]!;
      const view = chunk.view;
      const start = chunk.sendAt;
      let at = start;
      let spanned = 0;
      while (moved < count && chunk.queued > 0) {
        const size = RECORD_HEADER_BYTES + recordLength(view, at);
        if (moved > 0 ? bytes >= frameBytes || bytes + size > budget : size > budget && !firstMayExceed) {
          full = true;
          break;
        }
        setRecordId(view, at, assign(chunk.serial * OFFSETS + at));
        bytes += size;
        at += size;
        chunk.queued--;
        spanned++;
        moved++;
      }
      // By reference: a record is done only once its node has it, so its chunk is not written again before then.
      if (spanned > 0) batch.appendRecordsByReference(chunk.bytes.subarray(start, at), spanned);
      chunk.sendAt = at;
      chunk.outstanding += spanned;
      if (chunk.queued === 0) {
        this.#head++;
        chunk.sentOutAt = this.clock();
      }
    }
    this.#queued -= moved;
    this.#queuedBytes -= bytes - moved * RECORD_HEADER_BYTES;
    if (this.#head > 64 && this.#head * 2 > this.#sending.length) {
      this.#sending = this.#sending.slice(this.#head);
      this.#head = 0;
    }
    return bytes;
  }

  /** Payload bytes of the sent record `ref`. */
  lengthOf(ref: number): number {
    return payloadLength(this.#chunkAt(ref), ref);
  }

  /** The sent record `ref` is done; returns its payload bytes. */
  release(ref: number): number {
    const chunk = this.#chunkAt(ref);
    this.#settle(chunk);
    return payloadLength(chunk, ref);
  }

  /** The payload of the sent record `ref`, to send again (a view: it keeps its chunk's buffer alive). */
  takeBack(ref: number): Uint8Array {
    const payload = this.payloadOf(ref);
    const chunk = this.#chunkAt(ref);
    chunk.lent = true;
    this.#settle(chunk);
    return payload;
  }

  /** The payload of the sent record `ref`, still in flight: a view, to read at once. */
  payloadOf(ref: number): Uint8Array {
    const chunk = this.#chunkAt(ref);
    const start = (ref % OFFSETS) + RECORD_HEADER_BYTES;
    return chunk.bytes.subarray(start, start + payloadLength(chunk, ref));
  }

  /**
   * Chunks sent out at least `ageMs` ago whose records are not all done yet: kept alive by a few items
   * in flight for long. Their owner moves those records out (`copyOut`) so the chunks can go.
   */
  staleChunks(ageMs: number): Set<number> {
    const stale = new Set<number>();
    const before = this.clock() - ageMs;
    for (const chunk of this.#chunks.values()) {
      if (chunk.queued === 0 && chunk.outstanding > 0 && chunk.sentOutAt >= 0 && chunk.sentOutAt <= before)
        stale.add(chunk.serial);
    }
    return stale;
  }

  /** The chunk serial of a record reference. */
  chunkOf(ref: number): number {
    return Math.floor(ref / OFFSETS);
  }

  #chunkAt(ref: number): Chunk {
    const serial = this.chunkOf(ref);
    // Items are mostly done in the order they were sent: the chunk is most often the last one asked for.
    const last = this.#lastAsked;
    if (last !== undefined && last.serial === serial) return last;
    return (this.#lastAsked = this.#chunks.get(serial)!);
  }

  /** The payload of the sent record `ref` as bytes of its own; the record no longer holds its chunk. */
  copyOut(ref: number): Uint8Array {
    const copy = this.payloadOf(ref).slice();
    this.#settle(this.#chunkAt(ref));
    return copy;
  }

  clear(): void {
    this.#chunks.clear();
    this.#lastAsked = undefined;
    this.#sending = [];
    this.#head = 0;
    this.#tail = undefined;
    this.#queued = 0;
    this.#queuedBytes = 0;
  }

  #settle(chunk: Chunk): void {
    chunk.outstanding--;
    if (chunk.outstanding === 0 && chunk.queued === 0 && chunk !== this.#tail) this.#drop(chunk);
  }

  /**
   * Lets go of a chunk whose records are all done (or taken back), keeping it to be written again if it
   * lent nothing and the spares have room. Its bytes may still sit in a connection's queue only until
   * they are written, and a record is done only once its node has it; a record taken back from a lost
   * node left with that node's connection, closed before anything more is fed.
   */
  #drop(chunk: Chunk): void {
    this.#chunks.delete(chunk.serial);
    if (this.#lastAsked === chunk) this.#lastAsked = undefined;
    if (chunk.lent) return;
    if (chunk.bytes.length !== CHUNK_BYTES) this.#large.release(chunk.bytes);
    else if (this.#spare.length < SPARE_CHUNKS) this.#spare.push(chunk);
  }

  /** A chunk of at least `bytes`, kept from before if one is, else new. */
  #newChunk(serial: number, bytes: number): Chunk {
    if (bytes <= CHUNK_BYTES) return this.#spare.pop()?.reuse(serial) ?? new Chunk(serial, new Uint8Array(CHUNK_BYTES));
    return new Chunk(serial, this.#large.take(bytes > LARGE_CLASS_MAX ? bytes : 2 ** Math.ceil(Math.log2(bytes))));
  }

  /** Encodes and queues the item `values[index]` of an `appendValues`; throws what `encodeDeclined` throws. */
  #appendValue(value: unknown, index: number): void {
    if (typeof value === "string" && value.length > LONG_STRING) return this.#appendHeaded(undefined, value, index);
    if (ArrayBuffer.isView(value) && value.byteLength > LONG_BYTES) return this.#appendDeclined(value, index);
    const chunk = this.#chunkFor(RECORD_HEADER_BYTES + SMALL_OUTPUT_BYTES);
    const at = chunk.end;
    const length = encodeSmallInto(value, chunk.target, at + RECORD_HEADER_BYTES, chunk.bytes.length);
    if (length < 0) return this.#appendDeclined(value, index);
    this.#checkSize(length, index);
    this.#commit(chunk, at, length);
  }

  /** An item the small writer declined (there was room: it is not a small item), kept off `#appendValue`'s path. */
  #appendDeclined(value: unknown, index: number): void {
    if (ArrayBuffer.isView(value) && value.byteLength > LONG_BYTES) {
      const head = byteArrayHead(value);
      if (head !== undefined) return this.#appendHeaded(head, value as Uint8Array, index);
    }
    const bytes = encodeDeclined(value, index, true); // copied at once
    this.#checkSize(bytes.length, index); // before a chunk is made for it
    return this.#appendEncoded(bytes);
  }

  #checkSize(size: number, index: number): void {
    const limit = this.maxItemBytes;
    if (size <= limit) return;
    throw new ItemTooLargeError(
      `item ${index} is ${size} bytes encoded, over the limit of ${limit} bytes (maxItemBytes: the smallest of ` +
        "the root's or setup's and every node's --max-item)",
      { index, size, limit },
    );
  }

  /**
   * A long item written straight into its chunk behind its MessagePack head, instead of into msgpackr's
   * buffer and copied from there: bytes (a file's, `head` from `byteArrayHead`) as they are, or a string's
   * UTF-8 (a document, a page; its head made here), a lone surrogate as U+FFFD, as msgpackr writes it.
   */
  #appendHeaded(head: Uint8Array | undefined, body: Uint8Array | string, index: number): void {
    const length = typeof body === "string" ? Buffer.byteLength(body, "utf8") : body.length;
    head ??= stringHead(length);
    this.#checkSize(head.length + length, index);
    const chunk = this.#chunkFor(RECORD_HEADER_BYTES + head.length + length);
    const at = chunk.end;
    const start = at + RECORD_HEADER_BYTES + head.length;
    chunk.bytes.set(head, start - head.length);
    if (typeof body !== "string") chunk.bytes.set(body, start);
    else {
      const written = chunk.target.text.utf8Write(body, start);
      if (written !== length) throw new Error(`a string's UTF-8 took ${written} bytes where ${length} were counted`);
    }
    this.#commit(chunk, at, head.length + length);
  }

  #appendEncoded(bytes: Uint8Array): void {
    const chunk = this.#chunkFor(RECORD_HEADER_BYTES + bytes.length);
    const at = chunk.end;
    chunk.bytes.set(bytes, at + RECORD_HEADER_BYTES);
    this.#commit(chunk, at, bytes.length);
  }

  #commit(chunk: Chunk, at: number, length: number): void {
    writeRecordHeader(chunk.view, at, RecordKind.Input, 0, 0, 0, length);
    chunk.end = at + RECORD_HEADER_BYTES + length;
    if (chunk.queued === 0) this.#sending.push(chunk);
    chunk.sentOutAt = -1;
    chunk.queued++;
    this.#queued++;
    this.#queuedBytes += length;
  }

  /**
   * The chunk to write `bytes` more into: the tail if they fit, else a new one (one of its own for an item
   * larger than a chunk, which then sits at offset 0: every offset stays below LARGE_CLASS_MAX, or below
   * 2^24 when the chunk is the item's exact size).
   */
  #chunkFor(bytes: number): Chunk {
    const tail = this.#tail;
    if (tail !== undefined && tail.end + bytes <= tail.bytes.length) return tail;
    // A tail whose records are all done goes. Its memory is kept for new chunks only once the appends
    // that replaced it went through: an appendValues that fails rolls back to it (`#rollBack`), as it was.
    if (tail !== undefined && tail.queued === 0 && tail.outstanding === 0) {
      this.#chunks.delete(tail.serial);
      this.#retired.push(tail);
    }
    const chunk = this.#newChunk(this.#nextSerial++, bytes);
    this.#chunks.set(chunk.serial, chunk);
    this.#tail = chunk;
    return chunk;
  }

  /** The done tails the appends just made replaced, kept to be written again now that they went through. */
  #keepRetired(except?: Chunk): void {
    if (this.#retired.length === 0) return;
    for (const chunk of this.#retired) if (chunk !== except) this.#drop(chunk);
    this.#retired = [];
  }

  /** Undoes the appends since `mark` (a failed `appendValues`; nothing was sent meanwhile). */
  #rollBack(mark: Mark): void {
    this.#keepRetired(mark.tail); // but the tail before, which is the tail again
    for (const chunk of this.#sending.splice(mark.sending)) if (chunk !== mark.tail) this.#chunks.delete(chunk.serial);
    if (this.#tail !== undefined && this.#tail !== mark.tail) this.#chunks.delete(this.#tail.serial);
    if (mark.tail !== undefined) {
      mark.tail.end = mark.end;
      mark.tail.queued = mark.tailQueued;
      this.#chunks.set(mark.tail.serial, mark.tail);
    }
    this.#tail = mark.tail;
    this.#queued = mark.queued;
    this.#queuedBytes = mark.bytes;
  }
}

/** Payload bytes of the record `ref` in `chunk` (its header's length field). */
function payloadLength(chunk: Chunk, ref: number): number {
  return recordLength(chunk.view, ref % OFFSETS);
}

/** Where the queue stood before an `appendValues`. */
interface Mark {
  tail: Chunk | undefined;
  end: number;
  tailQueued: number;
  queued: number;
  bytes: number;
  sending: number;
}
