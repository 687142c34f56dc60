import { ProtocolError } from "../errors.ts";

/**
 * A frame is a 4-byte big-endian body length followed by a MessagePack body.
 *
 * Hot messages (feeds, results) carry their items as one binary blob. Their envelope is written by
 * hand (`blobFrameHead`) so the blob is never copied into an encoder: the head and the blob go to the
 * socket as two pieces, and the peer's MessagePack decoder sees one ordinary map whose `blob` is a bin.
 */
export const FRAME_HEADER_BYTES = 4;
export const DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024;

const EMPTY = new Uint8Array(0);

/**
 * Splits a TCP byte stream into frame bodies, whatever the chunking: one frame over many chunks,
 * many frames in one chunk. Every byte is copied at most once (only the bytes of a frame that spans
 * chunks are copied, into a buffer sized for exactly that frame), so the work is linear in the input.
 * Bodies are handed over: the caller may keep them.
 */
export class FrameDecoder {
  /** Bytes of an incomplete frame (header included while the header itself is incomplete). */
  #partial: Uint8Array = EMPTY;
  #filled = 0;
  /** Body length of the frame in `#partial`, or -1 while its header is incomplete. */
  #bodyLength = -1;
  readonly #header = new Uint8Array(FRAME_HEADER_BYTES);

  constructor(readonly maxFrameBytes = DEFAULT_MAX_FRAME_BYTES) {}

  /** Bytes held for an incomplete frame. */
  get bufferedBytes(): number {
    return this.#filled;
  }

  /**
   * Consumes a chunk and calls `onFrame` for each complete body, in order.
   * Throws `ProtocolError` on a length above the maximum, before allocating anything for it.
   */
  push(chunk: Uint8Array, onFrame: (body: Uint8Array) => void): void {
    let offset = 0;
    const end = chunk.length;
    if (this.#bodyLength >= 0 || this.#filled > 0) {
      offset = this.#continuePartial(chunk, onFrame);
      if (offset < 0) return; // chunk used up by the partial frame
    }
    while (offset < end) {
      if (end - offset < FRAME_HEADER_BYTES) {
        this.#header.set(chunk.subarray(offset, end));
        this.#filled = end - offset;
        return;
      }
      const length = readLength(chunk, offset, this.maxFrameBytes);
      const bodyStart = offset + FRAME_HEADER_BYTES;
      if (end - bodyStart >= length) {
        onFrame(chunk.subarray(bodyStart, bodyStart + length));
        offset = bodyStart + length;
      } else {
        this.#startBody(length);
        this.#partial.set(chunk.subarray(bodyStart, end));
        this.#filled = end - bodyStart;
        return;
      }
    }
  }

  /** Resumes an incomplete frame; returns where the chunk's unread bytes begin, or -1 if none are. */
  #continuePartial(chunk: Uint8Array, onFrame: (body: Uint8Array) => void): number {
    let offset = 0;
    if (this.#bodyLength < 0) {
      const need = FRAME_HEADER_BYTES - this.#filled;
      const take = Math.min(need, chunk.length);
      this.#header.set(chunk.subarray(0, take), this.#filled);
      this.#filled += take;
      if (this.#filled < FRAME_HEADER_BYTES) return -1;
      offset = take;
      this.#startBody(readLength(this.#header, 0, this.maxFrameBytes));
    }
    const take = Math.min(this.#bodyLength - this.#filled, chunk.length - offset);
    this.#partial.set(chunk.subarray(offset, offset + take), this.#filled);
    this.#filled += take;
    offset += take;
    if (this.#filled < this.#bodyLength) return -1;
    const body = this.#partial;
    this.#partial = EMPTY;
    this.#bodyLength = -1;
    this.#filled = 0;
    onFrame(body);
    return offset < chunk.length ? offset : -1;
  }

  #startBody(length: number): void {
    this.#bodyLength = length;
    this.#partial = new Uint8Array(length);
    this.#filled = 0;
  }
}

function readLength(bytes: Uint8Array, offset: number, max: number): number {
  const length =
    ((bytes[offset]! << 24) | (bytes[offset + 1]! << 16) | (bytes[offset + 2]! << 8) | bytes[offset + 3]!) >>> 0;
  if (length > max) {
    throw new ProtocolError(
      `frame length ${length} exceeds the maximum of ${max} bytes (is the peer speaking the pcluster protocol? ` +
        `raise --max-frame if items really are this large)`,
    );
  }
  if (length === 0) throw new ProtocolError("empty frame: a frame body must hold one MessagePack message");
  return length;
}

/** Writes a frame header (the body length) into `target` at `offset`. */
function writeFrameHeader(target: Uint8Array, offset: number, bodyLength: number): void {
  target[offset] = bodyLength >>> 24;
  target[offset + 1] = (bodyLength >>> 16) & 0xff;
  target[offset + 2] = (bodyLength >>> 8) & 0xff;
  target[offset + 3] = bodyLength & 0xff;
}

/** A whole frame (header and body) for an already encoded body. */
export function frameOf(body: Uint8Array): Uint8Array {
  const frame = new Uint8Array(FRAME_HEADER_BYTES + body.length);
  writeFrameHeader(frame, 0, body.length);
  frame.set(body, FRAME_HEADER_BYTES);
  return frame;
}

/** The largest head `blobFrameHead` writes: frame header, fixmap, `t`, type, fields, `blob` bin32 header. */
export const MAX_BLOB_HEAD_BYTES = 128;

const textEncoder = new TextEncoder();
const fixstrCache = new Map<string, Uint8Array>();

function fixstr(text: string): Uint8Array {
  let bytes = fixstrCache.get(text);
  if (bytes === undefined) {
    const utf8 = textEncoder.encode(text);
    if (utf8.length > 31) throw new RangeError(`blob frame key too long: ${text}`);
    bytes = new Uint8Array(1 + utf8.length);
    bytes[0] = 0xa0 | utf8.length;
    bytes.set(utf8, 1);
    fixstrCache.set(text, bytes);
  }
  return bytes;
}

/**
 * Writes, ending exactly at `end` in `target`, the frame header and MessagePack envelope of
 * `{ t: type, ...fields, blob: <bin of blobLength bytes> }`, so that the blob's bytes can follow at
 * `end` (in the same buffer or as the next socket write). Field values are non-negative integers.
 * Returns where the head starts.
 */
export function blobFrameHead(
  target: Uint8Array,
  end: number,
  type: string,
  fields: Readonly<Record<string, number>> | undefined,
  blobLength: number,
): number {
  const parts: Uint8Array[] = [fixstr("t"), fixstr(type)];
  let count = 2;
  if (fields !== undefined) {
    for (const key in fields) {
      parts.push(fixstr(key), uintBytes(fields[key]!));
      count++;
    }
  }
  parts.push(fixstr("blob"));
  let size = 1 + 5; // fixmap + bin32 header
  for (const part of parts) size += part.length;
  const start = end - size - FRAME_HEADER_BYTES;
  if (start < 0 || size + FRAME_HEADER_BYTES > MAX_BLOB_HEAD_BYTES) {
    throw new RangeError("blob frame head does not fit its reserved space");
  }
  writeFrameHeader(target, start, size + blobLength);
  let at = start + FRAME_HEADER_BYTES;
  target[at++] = 0x80 | count;
  for (const part of parts) {
    target.set(part, at);
    at += part.length;
  }
  target[at++] = 0xc6; // bin32
  target[at++] = blobLength >>> 24;
  target[at++] = (blobLength >>> 16) & 0xff;
  target[at++] = (blobLength >>> 8) & 0xff;
  target[at++] = blobLength & 0xff;
  return start;
}

function uintBytes(value: number): Uint8Array {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new RangeError(`blob frame field must be a uint32, got ${value}`);
  }
  if (value < 0x80) return Uint8Array.of(value);
  return Uint8Array.of(0xce, value >>> 24, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff);
}

const headScratch = new Uint8Array(MAX_BLOB_HEAD_BYTES);

/** The whole length of the blob frame `blobFrameHead` makes for these fields (what a credit charges). */
export function blobFrameBytes(
  type: string,
  fields: Readonly<Record<string, number>> | undefined,
  blobLength: number,
): number {
  return MAX_BLOB_HEAD_BYTES - blobFrameHead(headScratch, MAX_BLOB_HEAD_BYTES, type, fields, blobLength) + blobLength;
}
