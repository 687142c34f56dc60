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
/** Largest frame a peer may send before the handshake completes (see `FrameDecoder.trust`). */
export const DEFAULT_MAX_HANDSHAKE_FRAME_BYTES = 4096;
/**
 * The first buffer an incomplete body gets, at least: bodies up to this size (feed and result batches)
 * are copied once, into a buffer of their size, as if it had been allocated from the header.
 */
const MIN_BODY_BUFFER_BYTES = 256 * 1024;
/** The largest body buffer kept to assemble the next body in, once given back (see `FrameDecoder.push`). */
const MAX_SPARE_BODY_BYTES = 4 * 1024 * 1024;

/**
 * Splits a TCP byte stream into frame bodies, whatever the chunking: one frame over many chunks,
 * many frames in one chunk. A body that arrives whole in one chunk is handed over without a copy.
 * Bodies are handed over: the caller may keep them — or give an assembled one back (`onFrame` returns
 * true), and the next one spanning chunks is assembled in the same memory instead of in a fresh buffer,
 * faulted in page by page.
 *
 * Memory follows what arrived, not what a header announced: a frame's buffer grows geometrically as its
 * bytes come in (at most twice what was received, or 256 KiB), so a peer that announces 64 MiB and sends
 * a few bytes costs 256 KiB at most (before the handshake, 4 KiB: see `trust`). Growing costs at most
 * one more copy of the body in all, and only for frames over 256 KiB that span chunks.
 */
export class FrameDecoder {
  /** Bytes of an incomplete frame's body (header bytes while the header itself is incomplete). */
  #partial: Uint8Array = EMPTY;
  #filled = 0;
  /** Body length of the frame in `#partial`, or -1 while its header is incomplete. */
  #bodyLength = -1;
  /** A body buffer given back, to assemble the next body that fits in it. */
  #spare: Uint8Array | undefined;
  readonly #header = new Uint8Array(FRAME_HEADER_BYTES);
  /** The largest body accepted now: `handshakeFrameBytes` until `trust()`, then `maxFrameBytes`. */
  #limit: number;

  /**
   * `handshakeFrameBytes`, when given, is the largest frame accepted until `trust()` is called: a peer
   * that has not proved who it is may send only small frames.
   */
  constructor(
    readonly maxFrameBytes = DEFAULT_MAX_FRAME_BYTES,
    readonly handshakeFrameBytes?: number,
    /**
     * Memory to assemble bodies in, taken again once given back: the receiver of a body releases it there
     * when done with it (as it does a message joined from parts). Without it, one body's buffer is kept
     * for the next, if its handler said it kept none of it.
     */
    readonly memory?: BodyMemory,
  ) {
    this.#limit = Math.min(handshakeFrameBytes ?? maxFrameBytes, maxFrameBytes);
  }

  /** The peer passed the handshake: frames up to `maxFrameBytes` are accepted from now on. */
  trust(): void {
    this.#limit = this.maxFrameBytes;
  }

  /** Bytes received for an incomplete frame. */
  get bufferedBytes(): number {
    return this.#filled;
  }

  /** Bytes allocated for an incomplete frame (what it costs in memory). */
  get heldBytes(): number {
    return this.#partial.length;
  }

  /**
   * Consumes a chunk and calls `onFrame` for each complete body, in order. `onFrame` returns true when
   * it is done with the body's bytes (it kept no view of them). Throws `ProtocolError` on a length above
   * the maximum, before allocating anything for it.
   */
  push(chunk: Uint8Array, onFrame: (body: Uint8Array) => boolean | undefined): void {
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
      const length = this.#readLength(chunk, offset);
      const bodyStart = offset + FRAME_HEADER_BYTES;
      if (end - bodyStart >= length) {
        onFrame(chunk.subarray(bodyStart, bodyStart + length));
        offset = bodyStart + length;
      } else {
        this.#bodyLength = length;
        this.#filled = 0;
        this.#append(chunk.subarray(bodyStart, end));
        return;
      }
    }
  }

  /** Resumes an incomplete frame; returns where the chunk's unread bytes begin, or -1 if none are. */
  #continuePartial(chunk: Uint8Array, onFrame: (body: Uint8Array) => boolean | undefined): number {
    let offset = 0;
    if (this.#bodyLength < 0) {
      const need = FRAME_HEADER_BYTES - this.#filled;
      const take = Math.min(need, chunk.length);
      this.#header.set(chunk.subarray(0, take), this.#filled);
      this.#filled += take;
      if (this.#filled < FRAME_HEADER_BYTES) return -1;
      offset = take;
      this.#bodyLength = this.#readLength(this.#header, 0);
      this.#filled = 0;
    }
    const take = Math.min(this.#bodyLength - this.#filled, chunk.length - offset);
    this.#append(chunk.subarray(offset, offset + take));
    offset += take;
    if (this.#filled < this.#bodyLength) return -1;
    const buffer = this.#partial;
    const body = buffer.length === this.#bodyLength ? buffer : buffer.subarray(0, this.#bodyLength);
    this.#partial = EMPTY;
    this.#bodyLength = -1;
    this.#filled = 0;
    if (onFrame(body) === true) {
      if (this.memory !== undefined) this.memory.release(buffer);
      else if (buffer.length <= MAX_SPARE_BODY_BYTES) this.#spare = buffer;
    }
    return offset < chunk.length ? offset : -1;
  }

  /** Adds received body bytes, growing the buffer (never past the body's length) when they do not fit. */
  #append(bytes: Uint8Array): void {
    const needed = this.#filled + bytes.length;
    if (needed > this.#partial.length) {
      const spare = this.#spare;
      if (this.#filled === 0 && spare !== undefined && spare.length >= this.#bodyLength) {
        this.#spare = undefined; // the whole body fits in memory already held
        this.#partial = spare;
        this.#partial.set(bytes);
        this.#filled = needed;
        return;
      }
      const size = Math.min(this.#bodyLength, Math.max(2 * needed, MIN_BODY_BUFFER_BYTES));
      const memory = this.memory;
      const grown = memory === undefined ? unfilled(size) : memory.take(size);
      if (this.#filled > 0) grown.set(this.#partial.subarray(0, this.#filled));
      if (memory !== undefined && this.#partial.length > 0) memory.release(this.#partial);
      this.#partial = grown;
    }
    this.#partial.set(bytes, this.#filled);
    this.#filled = needed;
  }

  #readLength(bytes: Uint8Array, offset: number): number {
    const length =
      ((bytes[offset]! << 24) | (bytes[offset + 1]! << 16) | (bytes[offset + 2]! << 8) | bytes[offset + 3]!) >>> 0;
    if (length > this.#limit) {
      if (this.#limit < this.maxFrameBytes) {
        throw new ProtocolError(
          `frame length ${length} exceeds the maximum of ${this.#limit} bytes a peer may send before the handshake ` +
            "completes (the handshake's messages are small; is the peer speaking the pcluster protocol?)",
        );
      }
      throw new ProtocolError(
        `frame length ${length} exceeds the maximum of ${this.#limit} bytes (is the peer speaking the pcluster ` +
          "protocol? raise --max-frame if items really are this large)",
      );
    }
    if (length === 0) throw new ProtocolError("empty frame: a frame body must hold one MessagePack message");
    return length;
  }
}

/** Memory that bodies are assembled in and given back to (see KeptBuffers). */
export interface BodyMemory {
  /** `size` bytes, not zeroed, held by the caller until released. */
  take(size: number): Uint8Array;
  /** The memory under `bytes` is free again (a no-op for memory that did not come from here). */
  release(bytes: Uint8Array): void;
}

/**
 * A buffer of `size` bytes, not zeroed: the decoder writes every byte of it before handing it out, and
 * zeroing would cost as much again as the copy (Buffer's own pool is not used, so the body owns its memory).
 */
export function unfilled(size: number): Uint8Array {
  const bytes = Buffer.allocUnsafeSlow(size);
  return new Uint8Array(bytes.buffer, bytes.byteOffset, size);
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
