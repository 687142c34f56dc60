import { decode, decodeMessage } from "../../src/protocol/codec.ts";
import { RecordReader } from "../../src/protocol/record.ts";
import { FRAME_HEADER_BYTES } from "../../src/protocol/frame.ts";
import type { FeedTarget } from "../../src/root/scheduler.ts";

/** The blob of records in a feed frame (`{ t: "feed", blob }` after the 4-byte length), whole or in pieces. */
export function blobOf(frame: Uint8Array | readonly Uint8Array[]): Uint8Array {
  const whole = frame instanceof Uint8Array ? frame : Buffer.concat(frame);
  return (decodeMessage(whole.subarray(FRAME_HEADER_BYTES)) as { blob: Uint8Array }).blob;
}

/**
 * A node as the scheduler sees it, without a socket: it keeps the ids and values of each feed frame
 * it is sent, and a shared log of which target got each frame, in order.
 */
export class RecordingTarget implements FeedTarget {
  readonly frames: Array<{ ids: number[]; values: unknown[] }> = [];

  constructor(
    readonly address: string,
    readonly log: string[] = [],
  ) {}

  sendFeed(pieces: readonly Uint8Array[]): void {
    const blob = blobOf(pieces);
    const reader = new RecordReader(blob);
    const ids: number[] = [];
    const values: unknown[] = [];
    while (reader.next()) {
      ids.push(reader.id);
      values.push(decode(blob, reader.payloadStart, reader.payloadEnd));
    }
    this.frames.push({ ids, values });
    this.log.push(this.address);
  }

  /** Ids of every item sent here, in order. */
  get ids(): number[] {
    return this.frames.flatMap((frame) => frame.ids);
  }

  get values(): unknown[] {
    return this.frames.flatMap((frame) => frame.values);
  }
}
