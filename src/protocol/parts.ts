import { ProtocolError } from "../errors.ts";
import { FRAME_HEADER_BYTES, MAX_BLOB_HEAD_BYTES, blobFrameHead, unfilled } from "./frame.ts";

/**
 * A message larger than the peer's frame limit, or larger than PART_FROM_BYTES, travels as `part`
 * messages, `{ t: "part", left, blob }`, sent back to back: each `blob` holds the next bytes of the
 * message's body and `left` how many are still to come after it, so the first part tells the whole size
 * and the receiver can refuse a message over its limit before it holds any of it. The frame limit thus
 * bounds what one frame costs, and `maxItemBytes` how large an item may be. The receiver acknowledges
 * every part but the last (`part-ack`, in connection.ts): the sender's own requests, pings included,
 * wait behind the parts, and those few bytes tell it the peer is alive meanwhile.
 *
 * Why large messages go in parts even where one frame would do: the receiver assembles a frame that
 * spans socket reads in a buffer, reused for the next frame only up to 4 MiB (see FrameDecoder); a 40 MB
 * frame took fresh memory, grown in steps (a copy each), faulted in page by page. Parts of PART_BYTES
 * each are assembled in one reused buffer and copied at once to where the message is joined, a buffer
 * of its size (shared memory on a node, which its workers then read in place): one copy into fresh memory.
 */

/** The most a part's frame head takes (frame header, fixmap, `t`, `left` as a uint32, `blob`'s bin32 header). */
const PART_HEAD_BYTES = 64;
/** Below this a peer's frame limit leaves too little room per part to be worth splitting into. */
const MIN_PART_FRAME_BYTES = 1024;
/** Message bodies over this go in parts, whatever the peer's frame limit. */
export const PART_FROM_BYTES = 4 * 1024 * 1024;
/** Body bytes a part's frame holds at most (less where the peer's frame limit is lower). */
export const PART_BYTES = 1024 * 1024;

/**
 * The frames that carry a frame's body in parts whose bodies stay within `maxBodyBytes` (and PART_BYTES):
 * a small head then views of the body, for each part (nothing of the body is copied). The frame is given
 * as pieces, back to back, the first starting with the frame header.
 */
export function partFrames(frame: readonly Uint8Array[], maxBodyBytes: number): Uint8Array[] {
  if (maxBodyBytes < MIN_PART_FRAME_BYTES) {
    throw new RangeError(`the peer takes frames of ${maxBodyBytes} bytes, too few to send a large message in parts`);
  }
  const step = Math.min(maxBodyBytes, PART_BYTES + PART_HEAD_BYTES) - PART_HEAD_BYTES;
  let left = -FRAME_HEADER_BYTES;
  for (const piece of frame) left += piece.length;
  const pieces: Uint8Array[] = [];
  // Where the body starts: past the frame header, which may itself span pieces.
  let index = 0;
  let at = FRAME_HEADER_BYTES; // in frame[index]
  while (index < frame.length && at >= frame[index]!.length) at -= frame[index++]!.length;
  while (left > 0) {
    const size = Math.min(step, left);
    left -= size;
    const head = new Uint8Array(MAX_BLOB_HEAD_BYTES);
    pieces.push(head.subarray(blobFrameHead(head, MAX_BLOB_HEAD_BYTES, "part", { left }, size)));
    for (let wanted = size; wanted > 0; ) {
      const piece = frame[index]!;
      if (at === piece.length) {
        index++;
        at = 0;
        continue;
      }
      const take = Math.min(wanted, piece.length - at);
      pieces.push(piece.subarray(at, at + take));
      at += take;
      wanted -= take;
    }
  }
  return pieces;
}

/**
 * Joins a message's parts, in order, into its body: each part is copied as it comes into a buffer of
 * the message's size, allocated at its first part without being written (its pages are taken as parts
 * fill them, so memory still follows what was received), so that the part's frame can be reused at once.
 */
export class PartJoiner {
  #body: Uint8Array | undefined;
  #received = 0;
  /** Bytes the message being joined still lacks. */
  #missing = 0;

  /**
   * @param maxMessageBytes the largest message accepted in parts (a change applies from the next message on).
   * @param allocate a buffer of `size` bytes to join a message in; its bytes need not be zeroed.
   */
  constructor(
    public maxMessageBytes: number,
    readonly allocate: (size: number) => Uint8Array = unfilled,
  ) {}

  /** Whether a message is partly received: anything but its next part breaks the protocol then. */
  get joining(): boolean {
    return this.#body !== undefined;
  }

  /** Bytes held for the message being joined. */
  get bufferedBytes(): number {
    return this.#received;
  }

  /**
   * Takes the next part, copying its bytes (the caller may reuse `blob` afterwards, unless it is returned);
   * returns the whole body once `left` is 0. Throws `ProtocolError` for a message over the limit (at its
   * first part, before anything of it is kept) or a part that does not continue it.
   */
  add(blob: Uint8Array, left: number): Uint8Array | undefined {
    let body = this.#body;
    if (body === undefined) {
      const total = blob.length + left;
      if (total > this.maxMessageBytes) {
        throw new ProtocolError(
          `a message of ${total} bytes (sent in parts) is over the ${this.maxMessageBytes} bytes this connection ` +
            "accepts: the largest item (maxItemBytes, --max-item) plus a batch's overhead",
        );
      }
      if (left === 0) return blob;
      this.#body = body = this.allocate(total);
      this.#missing = total;
    } else if (blob.length + left !== this.#missing) {
      throw new ProtocolError(
        `a part of ${blob.length} bytes with ${left} left does not continue a message that lacks ${this.#missing} bytes`,
      );
    }
    body.set(blob, this.#received);
    this.#received += blob.length;
    this.#missing -= blob.length;
    if (left > 0) return undefined;
    this.#body = undefined;
    this.#received = 0;
    return body;
  }
}
