import { DONE_ENTRY_BYTES, RecordKind, RecordReader, doneEntryId } from "../protocol/record.ts";

/** Spans of ids up to this (or 8 per id, if more) are marked in a byte map; wider ones go in a Set. */
const MAP_SPAN = 1 << 16;

/**
 * The ids of the items whose Done a results frame carries, for exactly-once delivery to ask of each
 * output in it. The ids of one frame lie close together (the root hands ids out in order, and a node
 * answers what it was fed lately), so they are marked in a byte map over their span, reused from frame
 * to frame: a Set of every id per frame cost the root more than the rest of handing out an output.
 * Ids spread wider than the map (an item that ran for very long beside fresh ones) go in a Set.
 */
export class DoneIds {
  #ids = new Uint32Array(1024);
  #marks = new Uint8Array(1024);
  #first = 0;
  #span = 0;
  #wide: Set<number> | undefined;

  /** Reads the Done records of `blob` (a results frame's records); forgets the frame before. */
  fill(blob: Uint8Array): void {
    this.#marks.fill(0, 0, this.#span);
    this.#span = 0;
    this.#wide = undefined;
    let low = Number.POSITIVE_INFINITY;
    let high = -1;
    let count = 0;
    const reader = new RecordReader(blob);
    while (reader.next()) {
      if (reader.kind !== RecordKind.Done) continue;
      for (let at = reader.payloadStart; at + DONE_ENTRY_BYTES <= reader.payloadEnd; at += DONE_ENTRY_BYTES) {
        const id = doneEntryId(blob, at);
        if (count === this.#ids.length) this.#ids = grown(this.#ids);
        this.#ids[count++] = id;
        if (id < low) low = id;
        if (id > high) high = id;
      }
    }
    if (count === 0) return;
    const ids = this.#ids;
    const span = high - low + 1;
    if (span > Math.max(MAP_SPAN, count * 8)) {
      this.#wide = new Set();
      for (let i = 0; i < count; i++) this.#wide.add(ids[i]!);
      return;
    }
    if (span > this.#marks.length) this.#marks = new Uint8Array(Math.max(span, this.#marks.length * 2));
    this.#first = low;
    this.#span = span;
    for (let i = 0; i < count; i++) this.#marks[ids[i]! - low] = 1;
  }

  has(id: number): boolean {
    if (this.#wide !== undefined) return this.#wide.has(id);
    const at = id - this.#first;
    return at >= 0 && at < this.#span && this.#marks[at] === 1;
  }
}

function grown(ids: Uint32Array<ArrayBuffer>): Uint32Array<ArrayBuffer> {
  const more = new Uint32Array(ids.length * 2);
  more.set(ids);
  return more;
}
