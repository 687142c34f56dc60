import { ProtocolError } from "../errors.ts";

/**
 * Records: how items travel as bytes between root, node socket thread and workers. A batch (a "blob")
 * is records back to back, each a 12-byte little-endian header and a payload:
 *
 *   kind u8 | stage u8 | flags u16 | id u32 | payload length u32 | payload
 *
 * The same layout is used in feed frames, in the node's rings and in result frames, so the node moves
 * records by copying spans of bytes and never decodes an item. This file is the one place that knows
 * where each field lies: everything else reads and writes a header through the functions below
 * (plain functions on a DataView, so the hot paths that call them for every record stay monomorphic
 * and allocate nothing).
 */
export const RECORD_HEADER_BYTES = 12;

/** Where each header field lies, from the record's first byte. */
const KIND_AT = 0;
const STAGE_AT = 1;
const FLAGS_AT = 2;
const ID_AT = 4;
const LENGTH_AT = 8;

export const RecordKind = {
  /** Filler up to a ring's end, skipped by its reader (payload: nothing of use). Node-internal. */
  Pad: 0,
  /** An item to run, starting at task `stage` (payload: the encoded item). */
  Input: 1,
  /** An output of the last task (payload: the encoded output). */
  Output: 2,
  /**
   * Items are finished (each with all its descendants). The payload is one entry per item, in the
   * order they finished: its id and how many outputs it gave, each u32 little-endian (DONE_ENTRY_BYTES);
   * one record covers many items so completions cost a few bytes each.
   */
  Done: 3,
  /** A task threw on an item, which was dropped (payload: encoded `TaskErrorReport`). */
  TaskError: 4,
  /** An item was given up after its worker died too often (payload: encoded `TaskErrorReport`). */
  Failed: 5,
  /** A worker hands a sub-item (to run from `stage`) to the engine for an idle worker. Node-internal. */
  Share: 6,
  /** An input given up after crashing its workers: the next worker skips it. Node-internal. */
  Void: 7,
  /**
   * The outputs of the item `id` given so far are void: the worker running it died and it runs again
   * (payload: nothing). A root that hands out outputs exactly once drops those it holds for it.
   */
  Retract: 8,
  /**
   * A combiner's partial (payload: `encodePartial` in combiners.ts): it covers exactly the items of the
   * Done record right before it (a worker writes it right before that Done; the engine right after
   * its own Done, in the same results batch).
   */
  Partial: 9,
} as const;
export type RecordKind = (typeof RecordKind)[keyof typeof RecordKind];

/** Record flag: the id is the engine's id of a shared sub-item, not a root's item id. */
export const FLAG_SUB_ITEM = 1;

export function recordKind(view: DataView, offset: number): number {
  return view.getUint8(offset + KIND_AT);
}

export function recordStage(view: DataView, offset: number): number {
  return view.getUint8(offset + STAGE_AT);
}

export function recordFlags(view: DataView, offset: number): number {
  return view.getUint16(offset + FLAGS_AT, true);
}

export function recordId(view: DataView, offset: number): number {
  return view.getUint32(offset + ID_AT, true);
}

/** The payload's length in bytes (the header excluded). */
export function recordLength(view: DataView, offset: number): number {
  return view.getUint32(offset + LENGTH_AT, true);
}

export function setRecordKind(view: DataView, offset: number, kind: number): void {
  view.setUint8(offset + KIND_AT, kind);
}

export function setRecordFlags(view: DataView, offset: number, flags: number): void {
  view.setUint16(offset + FLAGS_AT, flags, true);
}

/** Gives a record its item id (the root's feed queue, as it sends). */
export function setRecordId(view: DataView, offset: number, id: number): void {
  view.setUint32(offset + ID_AT, id, true);
}

/** Relabels a record as item `id` with `flags` (e.g. a shared sub-item's output as its root item's). */
export function setRecordItem(view: DataView, offset: number, flags: number, id: number): void {
  view.setUint16(offset + FLAGS_AT, flags, true);
  view.setUint32(offset + ID_AT, id, true);
}

export function writeRecordHeader(
  view: DataView,
  offset: number,
  kind: number,
  stage: number,
  flags: number,
  id: number,
  length: number,
): void {
  view.setUint8(offset + KIND_AT, kind);
  view.setUint8(offset + STAGE_AT, stage);
  view.setUint16(offset + FLAGS_AT, flags, true);
  view.setUint32(offset + ID_AT, id, true);
  view.setUint32(offset + LENGTH_AT, length, true);
}

/** Bytes of one finished item in a Done record: its id, then how many outputs it gave. */
export const DONE_ENTRY_BYTES = 8;

/** The item id of the Done entry at `at`. */
export function doneEntryId(bytes: Uint8Array, at: number): number {
  return readU32(bytes, at);
}

/** How many outputs the item of the Done entry at `at` gave. */
export function doneEntryOutputs(bytes: Uint8Array, at: number): number {
  return readU32(bytes, at + 4);
}

/** Calls `each` with every item id of a Done record's payload `bytes[start, end)`, and its output count. */
export function forEachDone(
  bytes: Uint8Array,
  start: number,
  end: number,
  each: (id: number, outputs: number) => void,
): void {
  for (let at = start; at + DONE_ENTRY_BYTES <= end; at += DONE_ENTRY_BYTES) {
    each(doneEntryId(bytes, at), doneEntryOutputs(bytes, at));
  }
}

/** A u32, little-endian, at `at`. */
export function readU32(bytes: Uint8Array, at: number): number {
  return (bytes[at]! | (bytes[at + 1]! << 8) | (bytes[at + 2]! << 16) | (bytes[at + 3]! << 24)) >>> 0;
}

/**
 * Collects finished items (id and output count) and appends them as Done records (`maxIds` per record
 * at most), so that a record is paid per batch of completions, not per item.
 */
export class DoneList {
  /** Id and output count of each item, in turn. */
  readonly #entries: Uint32Array;
  count = 0;
  readonly #bytes: Uint8Array;

  constructor(readonly maxIds = 1024) {
    this.#entries = new Uint32Array(maxIds * 2);
    this.#bytes = new Uint8Array(this.#entries.buffer);
  }

  /** Adds an item; returns true when the list is full and must be flushed before the next add. */
  add(id: number, outputs: number): boolean {
    const at = this.count++ * 2;
    this.#entries[at] = id;
    this.#entries[at + 1] = outputs;
    return this.count === this.maxIds;
  }

  /** The id of the last item added (the Done record's own id). */
  get lastId(): number {
    return this.#entries[(this.count - 1) * 2]!;
  }

  /** The items as a Done payload (a view, valid until the next add). */
  payload(): Uint8Array {
    return this.#bytes.subarray(0, this.count * DONE_ENTRY_BYTES);
  }

  /** The items as a Done payload (a view, valid until the next add), and empties the list. */
  take(): Uint8Array {
    const payload = this.payload();
    this.count = 0;
    return payload;
  }
}

/** What a TaskError or Failed record carries (the record's id is the root item it descends from). */
export interface TaskErrorReport {
  task: string;
  message: string;
  stack?: string;
  /** Times a worker died on this item (Failed records only). */
  attempts?: number;
}

/**
 * Walks the records of a blob without copying or decoding anything. `next()` moves to the next record
 * and fills the public fields; a record running past the blob's end is a `ProtocolError` (its message
 * starts with `label`, e.g. "feed: ").
 *
 * @example
 * const reader = new RecordReader(blob);
 * while (reader.next()) if (reader.kind === RecordKind.Output) use(decode(blob, reader.payloadStart, reader.payloadEnd));
 */
export class RecordReader {
  kind = 0;
  stage = 0;
  flags = 0;
  id = 0;
  /** This record's place in the blob (0 for the first), and the offset of its header. */
  index = -1;
  recordStart = 0;
  payloadStart = 0;
  payloadEnd = 0;
  readonly #view: DataView;
  #offset = 0;

  constructor(
    readonly blob: Uint8Array,
    readonly label = "",
  ) {
    this.#view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
  }

  next(): boolean {
    const offset = this.#offset;
    const size = this.blob.length;
    if (offset >= size) return false;
    if (size - offset < RECORD_HEADER_BYTES) {
      throw new ProtocolError(`${this.label}record header at offset ${offset} is cut short`);
    }
    const view = this.#view;
    const length = recordLength(view, offset);
    const payloadStart = offset + RECORD_HEADER_BYTES;
    const index = this.index + 1;
    if (length > size - payloadStart) {
      throw new ProtocolError(
        `${this.label}record ${index} at offset ${offset} claims ${length} bytes, more than the batch holds`,
      );
    }
    this.kind = recordKind(view, offset);
    this.stage = recordStage(view, offset);
    this.flags = recordFlags(view, offset);
    this.id = recordId(view, offset);
    this.index = index;
    this.recordStart = offset;
    this.payloadStart = payloadStart;
    this.payloadEnd = payloadStart + length;
    this.#offset = payloadStart + length;
    return true;
  }
}
