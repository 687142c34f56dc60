// msgpackr's pure-JS entry, loaded at first use (`library`): its main entry also looks for the native
// string extractor (detect-libc, node-gyp-build, dlopen: tens of ms of CPU per thread), which only
// threads that decode large items want: `decode` loads it at the first (native-strings.ts). The same
// unpack.js serves both entries.
import type { Packr as PackrType, Unpackr as UnpackrType } from "msgpackr";
import { ItemEncodeError } from "../errors.ts";
import { findUncarried } from "./carried.ts";
import { loadNativeStrings } from "./native-strings.ts";
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
 * The one codec for items and messages: msgpackr (`useRecords: false`). Chosen by measurement over
 * `@msgpack/msgpack` — see `bench/framing.bench.ts` and the README. One Packr per thread (this module is
 * instantiated once per thread), reused for every value; its output buffers are never overwritten, so
 * encoded bytes may be kept. `undefined` is msgpackr's `undefined` (fixext 0), here as in items.
 *
 * Messages are standard MessagePack (binary fields as bin, which `decodeMessage` leaves as views).
 */
type Msgpackr = typeof import("msgpackr");

/**
 * msgpackr, loaded when a thread first meets a value the small writer and reader do not handle (or a
 * message): a worker that only sees small items never loads it, which saves each Worker thread about
 * 9 ms of CPU at start. `require` of the path the import conditions resolve to: "msgpackr/pack" through
 * `require`'s own conditions is msgpackr's CommonJS build of the main entry, addon search included.
 */
function library(): Msgpackr {
  if (loaded !== undefined) return loaded;
  loaded = require(Bun.resolveSync("msgpackr/pack", import.meta.dir)) as Msgpackr;
  const { Packr, Unpackr } = loaded;
  packr = new Packr({ useRecords: false, int64AsType: "number" });
  itemPackr = new Packr({ useRecords: false, moreTypes: true, variableMapSize: true });
  itemUnpackr = new Unpackr({ useRecords: false, int64AsType: "bigint", copyBuffers: true });
  return loaded;
}
let loaded: Msgpackr | undefined;

/** Whether this thread has loaded msgpackr yet (for the test that a thread of small items never does). */
export function msgpackrLoaded(): boolean {
  return loaded !== undefined;
}
/** For messages. */
let packr: PackrType;
/**
 * Items are carried as themselves or refused (`ItemEncodeError`; see carried.ts for what may be one):
 * `moreTypes` writes Sets, typed arrays, ArrayBuffers, DataViews, RegExps and bigints past 64 bits as
 * msgpackr's extensions, which its reader turns back into the same class; `variableMapSize` lets an
 * object have 65 536 keys or more.
 */
let itemPackr: PackrType;
/**
 * Items are decoded with `copyBuffers`: a binary value in an item must own its bytes, because the bytes
 * it was decoded from (a ring slot, a frame) are reused or would be kept alive by a view. 64-bit
 * integers are bigints: the writers write every number that is not a 32-bit integer as a float64, so a
 * 64-bit integer on the wire was a bigint.
 */
let itemUnpackr: UnpackrType;

/** Whether `value` is what msgpackr decodes the never-used byte 0xc1 to (only msgpackr makes it). */
export function isNeverUsedByte(value: unknown): boolean {
  return loaded !== undefined && value === (loaded as unknown as { C1: unknown }).C1;
}

/**
 * msgpackr's RESET_BUFFER_MODE (its exported value, here so that using it loads nothing): the next pack
 * writes where this one started (its bytes are valid until then). The codec test checks it is msgpackr's.
 */
export const RESET_BUFFER_MODE = 1024;
/**
 * msgpackr starts each new output buffer as large as its last, so one large value would make every
 * later buffer as large (and each small value kept afterwards would pin one). After a value that took
 * the buffer past this size, msgpackr gets a small one again. (Its buffer is shared by every Packr of
 * the thread, and must be a Buffer: msgpackr writes strings with Buffer's utf8Write.)
 */
const KEEP_BUFFER_BYTES = 1 << 20;
const FRESH_BUFFER_BYTES = 8192;

/**
 * `packer.pack(value)`. Transient: written where the last transient value was (msgpackr's buffer is
 * reused, not replaced as it fills), for bytes the caller copies at once; otherwise bytes to keep.
 */
function pack(packer: PackrType, value: unknown, transient: boolean): Uint8Array {
  const bytes = packer.pack(value, transient ? RESET_BUFFER_MODE : 0);
  if (bytes.buffer.byteLength > KEEP_BUFFER_BYTES) packer.useBuffer(Buffer.allocUnsafeSlow(FRESH_BUFFER_BYTES));
  return bytes;
}

/**
 * Encodes one message (or a report of the node's own) to MessagePack. The bytes are never written over,
 * so they may be kept; small values of plain data are written by `encodeSmall`, everything else by
 * msgpackr. Items go through `encodeItem`.
 */
export function encode(value: unknown): Uint8Array {
  const length = encodeSmall(value);
  if (length >= 0) return keepOutput(length);
  library();
  return pack(packr, value, false);
}

/**
 * Encodes one item: as itself, or an `ItemEncodeError` naming `name` (a number n is `items[n]`) and the
 * path to what cannot be sent. The bytes are never written over, so they may be kept.
 */
export function encodeItem(value: unknown, name: string | number = "item"): Uint8Array {
  const length = encodeSmall(value);
  return length >= 0 ? keepOutput(length) : encodeDeclined(value, name);
}

/**
 * An item the small-item writer declined (`encodeSmallInto` returned -1 with room to spare, so that it
 * is not tried twice): checked for what cannot be carried, then msgpackr's. Throws an `ItemEncodeError`
 * naming `name` (a number n is `items[n]`) and the path. The bytes may be kept, unless `transient`: then
 * they are valid until the next transient encode on this thread (for a caller that copies them at once).
 */
export function encodeDeclined(value: unknown, name: string | number = "item", transient = false): Uint8Array {
  const uncarried = findUncarried(value, name);
  if (uncarried !== undefined) throw itemEncodeError(uncarried.path, uncarried.reason, name);
  library();
  try {
    return pack(itemPackr, value, transient);
  } catch (error) {
    const root = typeof name === "number" ? `items[${name}]` : name;
    throw itemEncodeError(root, `MessagePack cannot hold it (${(error as Error).message})`, name);
  }
}

/**
 * The MessagePack head msgpackr writes before the bytes of a Buffer (bin) or a Uint8Array (its typed-array
 * extension, which its reader turns back into a Uint8Array), for a writer that copies the bytes in after
 * it itself, instead of into msgpackr's buffer first; undefined for any other value.
 */
export function byteArrayHead(value: ArrayBufferView): Uint8Array | undefined {
  const length = value.byteLength;
  if (value.constructor === Buffer) {
    if (length < 0x100) return Uint8Array.of(0xc4, length);
    if (length < 0x10000) return Uint8Array.of(0xc5, length >>> 8, length & 0xff);
    return Uint8Array.of(0xc6, length >>> 24, (length >>> 16) & 0xff, (length >>> 8) & 0xff, length & 0xff);
  }
  if (value.constructor !== Uint8Array) return undefined;
  uint8ArrayType ??= typedArrayType(new Uint8Array(1));
  const size = length + 1; // the type byte, then the bytes
  if (size < 0x100) return Uint8Array.of(0xc7, size, 0x74, uint8ArrayType);
  if (size < 0x10000) return Uint8Array.of(0xc8, size >>> 8, size & 0xff, 0x74, uint8ArrayType);
  return Uint8Array.of(0xc9, size >>> 24, (size >>> 16) & 0xff, (size >>> 8) & 0xff, size & 0xff, 0x74, uint8ArrayType);
}
let uint8ArrayType: number | undefined;

/** The MessagePack head msgpackr writes before `byteLength` bytes of a string's UTF-8 (str8, str16 or str32). */
export function stringHead(byteLength: number): Uint8Array {
  if (byteLength < 0x100) return Uint8Array.of(0xd9, byteLength);
  if (byteLength < 0x10000) return Uint8Array.of(0xda, byteLength >>> 8, byteLength & 0xff);
  return Uint8Array.of(
    0xdb,
    byteLength >>> 24,
    (byteLength >>> 16) & 0xff,
    (byteLength >>> 8) & 0xff,
    byteLength & 0xff,
  );
}

/** msgpackr's type byte for `sample`'s class of typed array: ext 1 + 1 bytes, "t", the type, one element. */
function typedArrayType(sample: Uint8Array): number {
  library();
  const bytes = pack(itemPackr, sample, false);
  if (bytes[0] !== 0xc7 || bytes[2] !== 0x74) throw new Error(`msgpackr wrote a Uint8Array as ${bytes.join(" ")}`);
  return bytes[3]!;
}

function itemEncodeError(path: string, reason: string, name: string | number): ItemEncodeError {
  const index = typeof name === "number" ? name : undefined;
  return new ItemEncodeError(`${path}: ${reason}`, { path, reason, index });
}

/**
 * Like `encodeItem`, but the bytes are valid only until the next encode on this thread: for a caller
 * that copies them at once (into a ring or a batch), which then costs no bytes of its own.
 */
export function encodeTransient(value: unknown, name: string | number = "item"): Uint8Array {
  const length = encodeSmall(value);
  return length >= 0 ? peekOutput(length) : encodeDeclined(value, name, true);
}

/** One options object for every decode: a hot path must not allocate one per item. */
const range = { start: 0, end: 0 };

/**
 * msgpackr decodes small items it is left with from this copy: its native string extraction costs in
 * proportion to the buffer it is handed. A Buffer: msgpackr copies binary values with the source's own
 * `slice`, so a bin value (what a Buffer is written as) comes back a Buffer, and a Uint8Array (written as
 * msgpackr's typed-array extension) a Uint8Array.
 */
const SCRATCH_BELOW = 256;
const scratch = Buffer.alloc(SCRATCH_BELOW);

/** Decodes one item from `bytes[start, end)`; binary values in it get bytes of their own. Throws on malformed input. */
export function decode(bytes: Uint8Array, start = 0, end = bytes.length): unknown {
  const length = end - start;
  // msgpackr reads `end: 0` as "to the end of the buffer": an empty item must fail here, not decode that.
  if (length <= 0) throw new RangeError("an item is at least one byte of MessagePack; got none");
  if (length <= SMALL_READ_BYTES) {
    const value = decodeSmall(bytes, start, end);
    if (value !== NOT_SMALL) return value;
  }
  library();
  if (length < SCRATCH_BELOW) {
    scratch.set(bytes.subarray(start, end));
    range.start = 0;
    range.end = length;
    return itemUnpackr.unpack(scratch, range);
  }
  nativeStrings ??= loadNativeStrings();
  range.start = start;
  range.end = end;
  return itemUnpackr.unpack(asBuffer(bytes), range);
}

/** Asked for by the first item decoded here that is large enough for it to matter (see native-strings.ts). */
let nativeStrings: Promise<void> | undefined;

/** The last bytes `asBuffer` was asked for, and its Buffer over them: a blob or ring has many items. */
let bufferOf: Uint8Array | undefined;
let bufferView: Buffer = scratch;

/** `bytes` as a Buffer over the same memory (see `scratch` for why). */
function asBuffer(bytes: Uint8Array): Buffer {
  if (bytes instanceof Buffer) return bytes;
  if (bytes !== bufferOf) {
    bufferOf = bytes;
    bufferView = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  return bufferView;
}

/** Decodes a message envelope: its binary fields (the record blobs) stay views of `bytes`, uncopied. */
export function decodeMessage(bytes: Uint8Array): unknown {
  const flat = decodeFlatMessage(bytes);
  if (flat !== undefined) return flat;
  library();
  return packr.unpack(bytes);
}

/**
 * The envelopes that come per batch — `{ t: "feed", blob }`, `{ t: "results", idle, blob }`,
 * `{ t: "credit", bytes }` — read without msgpackr: a map of up to 15 short ASCII keys whose values are
 * short ASCII strings, unsigned integers or bins. msgpackr's setup per call (its string extraction
 * above all) cost more than such a message holds; with slow items there is one message per few items.
 * Anything else (or anything odd) returns undefined, for msgpackr to read.
 */
function decodeFlatMessage(bytes: Uint8Array): Record<string, unknown> | undefined {
  const head = bytes[0];
  if (head === undefined || (head & 0xf0) !== 0x80) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const message: Record<string, unknown> = {};
  let at = 1;
  for (let left = head & 0x0f; left > 0; left--) {
    const key = readAscii(bytes, at);
    if (key === undefined || key === "__proto__") return undefined;
    at += 1 + key.length;
    if (at >= bytes.length) return undefined;
    const tag = bytes[at]!;
    let value: unknown;
    if (tag < 0x80) {
      value = tag;
      at += 1;
    } else if ((tag & 0xe0) === 0xa0) {
      value = readAscii(bytes, at);
      if (value === undefined) return undefined;
      at += 1 + (tag & 0x1f);
    } else if (tag === 0xcc || tag === 0xcd || tag === 0xce) {
      const size = 1 << (tag - 0xcc);
      if (at + 1 + size > bytes.length) return undefined;
      value = size === 1 ? bytes[at + 1] : size === 2 ? view.getUint16(at + 1) : view.getUint32(at + 1);
      at += 1 + size;
    } else if (tag === 0xc4 || tag === 0xc5 || tag === 0xc6) {
      const size = 1 << (tag - 0xc4);
      if (at + 1 + size > bytes.length) return undefined;
      const length = size === 1 ? bytes[at + 1]! : size === 2 ? view.getUint16(at + 1) : view.getUint32(at + 1);
      const start = at + 1 + size;
      if (start + length > bytes.length) return undefined;
      value = bytes.subarray(start, start + length);
      at = start + length;
    } else return undefined;
    message[key] = value;
  }
  return at === bytes.length ? message : undefined;
}

/** The fixstr at `at` if it is all ASCII (and whole), else undefined. */
function readAscii(bytes: Uint8Array, at: number): string | undefined {
  const tag = bytes[at];
  if (tag === undefined || (tag & 0xe0) !== 0xa0) return undefined;
  const end = at + 1 + (tag & 0x1f);
  if (end > bytes.length) return undefined;
  let text = "";
  for (let i = at + 1; i < end; i++) {
    const byte = bytes[i]!;
    if (byte >= 0x80) return undefined;
    text += String.fromCharCode(byte);
  }
  return text;
}

/** Spans of records at least this large are appended by reference (`appendRecordsByReference`); smaller ones are copied. */
const REFERENCE_FROM_BYTES = 4096;

/**
 * Frames up to this size are copied out of their builder, which keeps its buffer (`takeFrame`): a fresh
 * buffer per frame (allocated, zeroed, collected) cost more than the copy — on the root's feed, and on
 * a node's results at 16 nodes × 4 workers of 2 ms items, where it was a tenth of the socket thread's
 * JavaScript samples. Larger ones take the buffer along.
 */
const COPIED_FRAME_BYTES = 16 * 1024;

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
  /** Spans appended by reference, each going right after the buffer's bytes up to its `#referencedAt`. */
  #references: Uint8Array[] = [];
  #referencedAt: number[] = [];
  #referencedBytes = 0;

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
    return this.#end - MAX_BLOB_HEAD_BYTES + this.#referencedBytes;
  }

  /** Whether records were appended by reference: then `finishFramePieces` gives the frame without copying them. */
  get hasReferences(): boolean {
    return this.#references.length > 0;
  }

  /** Appends a record; returns where its payload lies in the buffer (valid until `finishFrame`). */
  append(kind: number, stage: number, flags: number, id: number, payload: Uint8Array): void {
    const at = this.#reserve(RECORD_HEADER_BYTES + payload.length);
    writeRecordHeader(this.#view, at, kind, stage, flags, id, payload.length);
    this.#buffer.set(payload, at + RECORD_HEADER_BYTES);
    this.#count++;
  }

  /**
   * Appends a record whose payload is not copied when it is many bytes (an oversize output): the caller
   * must keep those bytes unchanged until the frame is written, as for `appendRecordsByReference`.
   */
  appendByReference(kind: number, stage: number, flags: number, id: number, payload: Uint8Array): void {
    if (payload.length < REFERENCE_FROM_BYTES) return this.append(kind, stage, flags, id, payload);
    const at = this.#reserve(RECORD_HEADER_BYTES);
    writeRecordHeader(this.#view, at, kind, stage, flags, id, payload.length);
    this.#references.push(payload);
    this.#referencedAt.push(this.#end);
    this.#referencedBytes += payload.length;
    this.#count++;
  }

  /** Appends bytes that already are whole records (`count` of them), copied as one span. */
  appendRecords(records: Uint8Array, count: number): void {
    const at = this.#reserve(records.length);
    this.#buffer.set(records, at);
    this.#count += count;
  }

  /**
   * Appends whole records (`count` of them) without copying them when they are many bytes: the caller
   * must keep those bytes unchanged until the frame is written (`finishFramePieces` gives it as pieces).
   * Each other way out of the builder copies them in first.
   */
  appendRecordsByReference(records: Uint8Array, count: number): void {
    if (records.length < REFERENCE_FROM_BYTES) return this.appendRecords(records, count);
    this.#references.push(records);
    this.#referencedAt.push(this.#end);
    this.#referencedBytes += records.length;
    this.#count += count;
  }

  /**
   * The finished frame `{ t: type, ...fields, blob }` as pieces to write in order: the spans appended by
   * reference as they are, the head and the records copied in between as bytes of their own (so this
   * builder keeps its buffer). The builder starts over.
   */
  finishFramePieces(type: string, fields?: Readonly<Record<string, number>>): Uint8Array[] {
    const start = blobFrameHead(this.#buffer, MAX_BLOB_HEAD_BYTES, type, fields, this.byteLength);
    const own = this.#buffer.buffer;
    const pieces = this.#pieces(start).map((piece) => (piece.buffer === own ? piece.slice() : piece));
    this.#startOver();
    return pieces;
  }

  /** The bytes from `from` to the end, in order: the buffer's (as views) and the spans appended by reference. */
  #pieces(from: number): Uint8Array[] {
    const pieces: Uint8Array[] = [];
    for (let index = 0; index < this.#references.length; index++) {
      const at = this.#referencedAt[index]!;
      if (at > from) pieces.push(this.#buffer.subarray(from, at));
      pieces.push(this.#references[index]!);
      from = at;
    }
    if (this.#end > from) pieces.push(this.#buffer.subarray(from, this.#end));
    return pieces;
  }

  /** Copies the spans appended by reference into the buffer, where they go (for the ways out that give one buffer). */
  #copyReferences(): void {
    if (this.#references.length === 0) return;
    const end = this.#end + this.#referencedBytes;
    const buffer = new Uint8Array(Math.max(end, this.#buffer.length));
    let to = 0;
    for (const piece of this.#pieces(0)) {
      buffer.set(piece, to);
      to += piece.length;
    }
    this.#buffer = buffer;
    this.#view = new DataView(buffer.buffer);
    this.#target = undefined;
    this.#end = end;
    this.#forgetReferences();
  }

  #forgetReferences(): void {
    if (this.#references.length === 0) return;
    this.#references = [];
    this.#referencedAt = [];
    this.#referencedBytes = 0;
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
   * Appends a record whose payload is the item `value` encoded. A small value is written straight into
   * the batch (no bytes of its own, no copy); anything else goes through `encodeItem`. Throws what
   * `encodeItem` throws (an `ItemEncodeError` naming the item `name`), and then appends nothing.
   */
  appendValue(
    kind: number,
    stage: number,
    flags: number,
    id: number,
    value: unknown,
    name: string | number = "item",
  ): void {
    const at = this.#end;
    const payloadAt = at + RECORD_HEADER_BYTES;
    if (payloadAt + SMALL_OUTPUT_BYTES > this.#buffer.length) {
      return this.append(kind, stage, flags, id, encodeTransient(value, name));
    }
    this.#target ??= new SmallTarget(this.#buffer);
    const length = encodeSmallInto(value, this.#target, payloadAt, this.#buffer.length);
    if (length < 0) return this.append(kind, stage, flags, id, encodeDeclined(value, name, true));
    writeRecordHeader(this.#view, at, kind, stage, flags, id, length);
    this.#end = payloadAt + length;
    this.#count++;
  }

  /** The finished frame `{ t: type, ...fields, blob }`, ready for the socket; the builder starts over. */
  finishFrame(type: string, fields?: Readonly<Record<string, number>>): Uint8Array {
    const frame = this.#frameInPlace(type, fields);
    this.#replaceBuffer(this.#nextBufferBytes());
    return frame;
  }

  /**
   * The finished frame, copied out of the builder when it is small (`copyFrame`), else handed over with
   * the buffer (`finishFrame`): the way to send a batch of plain records.
   */
  takeFrame(type: string, fields?: Readonly<Record<string, number>>): Uint8Array {
    return this.byteLength <= COPIED_FRAME_BYTES ? this.copyFrame(type, fields) : this.finishFrame(type, fields);
  }

  /**
   * The finished frame as a copy of its own; the builder starts over in the same buffer. For frames of
   * a few records: copying them costs less than the fresh buffer `finishFrame` leaves behind (allocated,
   * zeroed and later collected: with 2 ms items, an eighth of the root's JavaScript time went there).
   */
  copyFrame(type: string, fields?: Readonly<Record<string, number>>): Uint8Array {
    const frame = this.#frameInPlace(type, fields).slice();
    this.#startOver();
    return frame;
  }

  /**
   * Lends the finished frame to `use`, in the builder's own buffer, then starts over in that buffer: for a
   * caller that is done with the bytes when `use` returns (`Connection.sendFrameCopy`), no buffer of its
   * own per frame.
   */
  lendFrame(
    type: string,
    fields: Readonly<Record<string, number>> | undefined,
    use: (frame: Uint8Array) => void,
  ): void {
    use(this.#frameInPlace(type, fields));
    this.#startOver();
  }

  /** The finished frame in the builder's own buffer (spans appended by reference copied in first). */
  #frameInPlace(type: string, fields: Readonly<Record<string, number>> | undefined): Uint8Array {
    this.#copyReferences();
    const start = blobFrameHead(this.#buffer, MAX_BLOB_HEAD_BYTES, type, fields, this.#end - MAX_BLOB_HEAD_BYTES);
    return this.#buffer.subarray(start, this.#end);
  }

  /**
   * Starts over in the same buffer once its frame is out; a buffer grown for a large record goes instead,
   * rather than stay held for small frames.
   */
  #startOver(): void {
    if (this.#buffer.length > 4 * this.initialBytes) this.#replaceBuffer(this.initialBytes);
    else this.clear();
  }

  /** The records appended so far as a buffer of their own (no frame head); the builder starts over. */
  takeRecords(): Uint8Array {
    this.#copyReferences();
    const records = this.#buffer.subarray(MAX_BLOB_HEAD_BYTES, this.#end);
    this.#replaceBuffer(this.#nextBufferBytes());
    return records;
  }

  /** The records appended so far, in place: valid until the builder changes (for a reader that is done before then). */
  records(): Uint8Array {
    this.#copyReferences();
    return this.#buffer.subarray(MAX_BLOB_HEAD_BYTES, this.#end);
  }

  /** Drops the records appended so far, keeping the buffer. */
  clear(): void {
    this.#end = MAX_BLOB_HEAD_BYTES;
    this.#count = 0;
    this.#forgetReferences();
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
    this.#forgetReferences();
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
