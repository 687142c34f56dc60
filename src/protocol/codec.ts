import { Packr, Unpackr } from "msgpackr";
import { MAX_BLOB_HEAD_BYTES, blobFrameHead } from "./frame.ts";
import { RECORD_HEADER_BYTES, writeRecordHeader } from "./record.ts";
import {
  NOT_SMALL,
  SMALL_OUTPUT_BYTES,
  SMALL_READ_BYTES,
  SmallTarget,
  decodeSmall,
  encodeSmall,
  encodeSmallInto,
  keepOutput,
  peekOutput,
} from "./small-msgpack.ts";

/**
 * The one codec for items and messages: msgpackr writing standard MessagePack (`useRecords: false`;
 * `undefined` as nil). Chosen by measurement over `@msgpack/msgpack` — see `bench/framing.bench.ts`
 * and the README. One Packr per thread (this module is instantiated once per thread), reused for
 * every value; its output buffers are never overwritten, so encoded bytes may be kept.
 */
const packr = new Packr({ useRecords: false, encodeUndefinedAsNil: true, int64AsType: "number" });
/**
 * Items are decoded with `copyBuffers`: a binary value in an item must own its bytes, because the bytes
 * it was decoded from (a ring slot, a frame) are reused or would be kept alive by a view.
 */
const itemUnpackr = new Unpackr({ useRecords: false, int64AsType: "number", copyBuffers: true });

/**
 * Encodes one item (or message) to standard MessagePack. The bytes are never written over, so they may
 * be kept; small values of plain data are written by `encodeSmall`, everything else by msgpackr.
 */
export function encode(value: unknown): Uint8Array {
  const length = encodeSmall(value);
  return length >= 0 ? keepOutput(length) : packr.pack(value);
}

/**
 * msgpackr's encoding alone: for a value the small-item writer already declined (`encodeSmallInto`
 * returned -1 with room to spare), so that it is not tried twice. The bytes may be kept.
 */
export function encodeDeclined(value: unknown): Uint8Array {
  return packr.pack(value);
}

/**
 * Like `encode`, but the bytes are valid only until the next encode on this thread: for a caller that
 * copies them at once (into a ring or a batch), which then costs no bytes of its own.
 */
export function encodeTransient(value: unknown): Uint8Array {
  const length = encodeSmall(value);
  return length >= 0 ? peekOutput(length) : packr.pack(value);
}

/** One options object for every decode: a hot path must not allocate one per item. */
const range = { start: 0, end: 0 };

/**
 * msgpackr decodes small items it is left with from this copy: its native string extraction costs in
 * proportion to the buffer it is handed. A plain Uint8Array: msgpackr copies binary values with the
 * source's own `slice`, and those must stay Uint8Arrays.
 */
const SCRATCH_BELOW = 256;
const scratch = new Uint8Array(SCRATCH_BELOW);

/** Decodes one item from `bytes[start, end)`; binary values in it get bytes of their own. Throws on malformed input. */
export function decode(bytes: Uint8Array, start = 0, end = bytes.length): unknown {
  const length = end - start;
  // msgpackr reads `end: 0` as "to the end of the buffer": an empty item must fail here, not decode that.
  if (length <= 0) throw new RangeError("an item is at least one byte of MessagePack; got none");
  if (length <= SMALL_READ_BYTES) {
    const value = decodeSmall(bytes, start, end);
    if (value !== NOT_SMALL) return value;
  }
  if (length < SCRATCH_BELOW) {
    scratch.set(bytes.subarray(start, end));
    range.start = 0;
    range.end = length;
    return itemUnpackr.unpack(scratch, range);
  }
  range.start = start;
  range.end = end;
  return itemUnpackr.unpack(bytes, range);
}

/** Decodes a message envelope: its binary fields (the record blobs) stay views of `bytes`, uncopied. */
export function decodeMessage(bytes: Uint8Array): unknown {
  return packr.unpack(bytes);
}

/**
 * Builds a blob of records in one growing buffer with room reserved in front for the frame head, so a
 * finished batch goes to the socket as it is (`finishFrame`). A builder starts a fresh buffer after
 * each finish: the finished frame belongs to the caller.
 */
export class RecordBatchBuilder {
  #buffer: Uint8Array;
  #view: DataView;
  /** The buffer as `appendValue` writes into it, made when first needed. */
  #target: SmallTarget | undefined;
  #end = MAX_BLOB_HEAD_BYTES;
  #count = 0;

  constructor(readonly initialBytes = 64 * 1024) {
    this.#buffer = new Uint8Array(initialBytes);
    this.#view = new DataView(this.#buffer.buffer);
  }

  /** Records in the batch. */
  get count(): number {
    return this.#count;
  }

  /** Payload and header bytes in the batch. */
  get byteLength(): number {
    return this.#end - MAX_BLOB_HEAD_BYTES;
  }

  /** Appends a record; returns where its payload lies in the buffer (valid until `finishFrame`). */
  append(kind: number, stage: number, flags: number, id: number, payload: Uint8Array): void {
    const at = this.#reserve(RECORD_HEADER_BYTES + payload.length);
    writeRecordHeader(this.#view, at, kind, stage, flags, id, payload.length);
    this.#buffer.set(payload, at + RECORD_HEADER_BYTES);
    this.#count++;
  }

  /** Appends bytes that already are whole records (`count` of them), copied as one span. */
  appendRecords(records: Uint8Array, count: number): void {
    const at = this.#reserve(records.length);
    this.#buffer.set(records, at);
    this.#count += count;
  }

  /**
   * Appends one record whose payload is `length` bytes the caller writes itself into the returned
   * buffer at the returned offset (used to copy payloads straight out of a ring).
   */
  appendWith(
    kind: number,
    stage: number,
    flags: number,
    id: number,
    length: number,
  ): { buffer: Uint8Array; at: number } {
    const at = this.#reserve(RECORD_HEADER_BYTES + length);
    writeRecordHeader(this.#view, at, kind, stage, flags, id, length);
    this.#count++;
    return { buffer: this.#buffer, at: at + RECORD_HEADER_BYTES };
  }

  /**
   * Appends a record whose payload is `value` encoded. A small value is written straight into the batch
   * (no bytes of its own, no copy); anything else goes through `encode`. Throws what `encode` throws,
   * and then appends nothing.
   */
  appendValue(kind: number, stage: number, flags: number, id: number, value: unknown): void {
    const at = this.#end;
    const payloadAt = at + RECORD_HEADER_BYTES;
    if (payloadAt + SMALL_OUTPUT_BYTES > this.#buffer.length)
      return this.append(kind, stage, flags, id, encodeTransient(value));
    this.#target ??= new SmallTarget(this.#buffer);
    const length = encodeSmallInto(value, this.#target, payloadAt, this.#buffer.length);
    if (length < 0) return this.append(kind, stage, flags, id, encodeDeclined(value));
    writeRecordHeader(this.#view, at, kind, stage, flags, id, length);
    this.#end = payloadAt + length;
    this.#count++;
  }

  /** The finished frame `{ t: type, ...fields, blob }`, ready for the socket; the builder starts over. */
  finishFrame(type: string, fields?: Readonly<Record<string, number>>): Uint8Array {
    const start = blobFrameHead(this.#buffer, MAX_BLOB_HEAD_BYTES, type, fields, this.#end - MAX_BLOB_HEAD_BYTES);
    const frame = this.#buffer.subarray(start, this.#end);
    this.#replaceBuffer(this.#nextBufferBytes());
    return frame;
  }

  /** The records appended so far as a buffer of their own (no frame head); the builder starts over. */
  takeRecords(): Uint8Array {
    const records = this.#buffer.subarray(MAX_BLOB_HEAD_BYTES, this.#end);
    this.#replaceBuffer(this.#nextBufferBytes());
    return records;
  }

  /** The records appended so far, in place: valid until the builder changes (for a reader that is done before then). */
  records(): Uint8Array {
    return this.#buffer.subarray(MAX_BLOB_HEAD_BYTES, this.#end);
  }

  /** Drops the records appended so far, keeping the buffer. */
  clear(): void {
    this.#end = MAX_BLOB_HEAD_BYTES;
    this.#count = 0;
  }

  /**
   * The next buffer after one was handed out: as large as the last batch needed, rounded up to a power
   * of two, between 4 KiB and four times the initial size. A builder that sends small batches does not
   * allocate (and zero) its full initial size for each one.
   */
  #nextBufferBytes(): number {
    let bytes = 4096;
    const limit = Math.max(bytes, 4 * this.initialBytes);
    while (bytes < this.#end && bytes < limit) bytes *= 2;
    return bytes;
  }

  #replaceBuffer(bytes: number): void {
    this.#buffer = new Uint8Array(bytes);
    this.#view = new DataView(this.#buffer.buffer);
    this.#target = undefined;
    this.#end = MAX_BLOB_HEAD_BYTES;
    this.#count = 0;
  }

  #reserve(bytes: number): number {
    const at = this.#end;
    const needed = at + bytes;
    if (needed > this.#buffer.length) {
      const grown = new Uint8Array(Math.max(needed, this.#buffer.length * 2));
      grown.set(this.#buffer.subarray(0, at));
      this.#buffer = grown;
      this.#view = new DataView(grown.buffer);
      this.#target = undefined;
    }
    this.#end = needed;
    return at;
  }
}
