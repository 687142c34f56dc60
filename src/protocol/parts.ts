import { ProtocolError } from "../errors.ts";
import { FRAME_HEADER_BYTES, MAX_BLOB_HEAD_BYTES, blobFrameHead } from "./frame.ts";

/**
 * A message larger than the peer's frame limit travels as `part` messages, `{ t: "part", left, blob }`,
 * sent back to back: each `blob` holds the next bytes of the message's body and `left` how many are
 * still to come after it, so the first part tells the whole size and the receiver can refuse a message
 * over its limit before it holds any of it. The frame limit thus bounds what one frame costs, and
 * `maxItemBytes` how large an item may be. The receiver acknowledges every part but the last
 * (`part-ack`, in connection.ts): the sender's own requests, pings included, wait behind the parts, and
 * those few bytes tell it the peer is alive meanwhile.
 */

/** The most a part's frame head takes (frame header, fixmap, `t`, `left` as a uint32, `blob`'s bin32 header). */
const PART_HEAD_BYTES = 64;
/** Below this a peer's frame limit leaves too little room per part to be worth splitting into. */
const MIN_PART_FRAME_BYTES = 1024;

/**
 * The frames that carry `frame`'s body in parts whose bodies stay within `maxBodyBytes`: a small head
 * then a view of the body, for each part (nothing of the body is copied).
 */
export function partFrames(frame: Uint8Array, maxBodyBytes: number): Uint8Array[] {
  if (maxBodyBytes < MIN_PART_FRAME_BYTES) {
    throw new RangeError(`the peer takes frames of ${maxBodyBytes} bytes, too few to send a large message in parts`);
  }
  const body = frame.subarray(FRAME_HEADER_BYTES);
  const step = maxBodyBytes - PART_HEAD_BYTES;
  const pieces: Uint8Array[] = [];
  for (let at = 0; at < body.length; at += step) {
    const piece = body.subarray(at, Math.min(at + step, body.length));
    const head = new Uint8Array(MAX_BLOB_HEAD_BYTES);
    const start = blobFrameHead(
      head,
      MAX_BLOB_HEAD_BYTES,
      "part",
      { left: body.length - at - piece.length },
      piece.length,
    );
    pieces.push(head.subarray(start), piece);
  }
  return pieces;
}

/**
 * Joins a message's parts, in order, into its body. What it holds follows what was received: the parts
 * are kept as they came and copied together once the last one is in.
 */
export class PartJoiner {
  #parts: Uint8Array[] = [];
  #received = 0;
  /** Bytes the message being joined still lacks. */
  #missing = 0;

  /** @param maxMessageBytes the largest message accepted in parts (a change applies from the next message on). */
  constructor(public maxMessageBytes: number) {}

  /** Whether a message is partly received: anything but its next part breaks the protocol then. */
  get joining(): boolean {
    return this.#parts.length > 0;
  }

  /** Bytes held for the message being joined. */
  get bufferedBytes(): number {
    return this.#received;
  }

  /**
   * Takes the next part; returns the whole body once `left` is 0. Throws `ProtocolError` for a message
   * over the limit (at its first part, before anything of it is kept) or a part that does not continue it.
   */
  add(blob: Uint8Array, left: number): Uint8Array | undefined {
    if (this.#parts.length === 0) {
      const total = blob.length + left;
      if (total > this.maxMessageBytes) {
        throw new ProtocolError(
          `a message of ${total} bytes (sent in parts) is over the ${this.maxMessageBytes} bytes this connection ` +
            "accepts: the largest item (maxItemBytes, --max-item) plus a batch's overhead",
        );
      }
      if (left === 0) return blob;
      this.#missing = total;
    } else if (blob.length + left !== this.#missing) {
      throw new ProtocolError(
        `a part of ${blob.length} bytes with ${left} left does not continue a message that lacks ${this.#missing} bytes`,
      );
    }
    this.#parts.push(blob);
    this.#received += blob.length;
    this.#missing -= blob.length;
    if (left > 0) return undefined;
    const body = new Uint8Array(this.#received);
    let at = 0;
    for (const part of this.#parts) {
      body.set(part, at);
      at += part.length;
    }
    this.#parts = [];
    this.#received = 0;
    return body;
  }
}
