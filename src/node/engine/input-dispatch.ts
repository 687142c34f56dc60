import { KeptBuffers, sharedMemory } from "../../protocol/kept-buffers.ts";
import { ProtocolError } from "../../errors.ts";
import {
  RECORD_HEADER_BYTES,
  RecordKind,
  RecordReader,
  recordFlags,
  recordId,
  recordLength,
  recordStage,
} from "../../protocol/record.ts";
import { FLAG_OVERSIZE, itemKey } from "../worker-messages.ts";
import type { WorkerSlot } from "./worker-slot.ts";

const EMPTY = new Uint8Array(0);
/** Records given to one worker in a row before the least loaded one is picked again. */
const SPAN_RECORDS = 64;

/**
 * Checks a feed blob: whole records (RecordReader's checks), each an Input without flags starting at a
 * task of the chain. Returns how many records it holds; throws a `ProtocolError` naming the first bad one.
 */
export function countFeedRecords(blob: Uint8Array, taskCount: number): number {
  const reader = new RecordReader(blob, "feed: ");
  while (reader.next()) {
    const { kind, flags, index } = reader;
    if (kind !== RecordKind.Input || flags !== 0) {
      const where = `record ${index} at offset ${reader.recordStart}`;
      throw new ProtocolError(`feed: ${where} is not an input item (kind ${kind}, flags ${flags})`);
    }
    if (reader.stage >= taskCount) {
      const chain = `the taskchain has ${taskCount}`;
      throw new ProtocolError(`feed: record ${index} starts at task ${reader.stage}, but ${chain}`);
    }
  }
  return reader.index + 1;
}

/**
 * The engine's input side: copies a root's feed blobs, unchanged, into the workers' input rings, span
 * by span to the least loaded worker that has room under its queue cap, and keeps what does not fit in
 * a backlog, in order. It moves bytes; it never decodes an item.
 */
export class InputDispatcher {
  /** Batches (or their undispatched rests) waiting for ring space, oldest first. */
  #backlog: Uint8Array[] = [];
  /** Marks slots found full during one dispatch pass (see `#dispatchBlob`). */
  #pass = 0;
  /** Whether the last `#leastLoaded` saw another worker with nothing to do beside the one it chose. */
  #anotherIdle = false;
  /** Whether the backlog was empty at some moment since the last `standing()`. */
  #emptied = true;

  constructor(
    readonly slots: readonly WorkerSlot[],
    /** Shared memory for oversize items, and for feeds joined from parts (see NodeServer). */
    readonly oversize: KeptBuffers = new KeptBuffers(sharedMemory),
  ) {}

  /** Whether records wait for ring space. */
  get waiting(): boolean {
    return this.#backlog.length > 0;
  }

  /**
   * Whether records have waited for ring space the whole time since the last call: a standing backlog,
   * more work here than the workers' queues hold for as long as that — not a burst of a feed frame that
   * the workers drained meanwhile. Starts a new period (the engine asks once per results frame).
   */
  standing(): boolean {
    const waiting = this.#backlog.length > 0;
    const standing = waiting && !this.#emptied;
    this.#emptied = !waiting;
    return standing;
  }

  /** Bytes waiting for ring space. */
  get backlogBytes(): number {
    let bytes = 0;
    for (const blob of this.#backlog) bytes += blob.length;
    return bytes;
  }

  /**
   * Copies `blob`'s records into rings; what does not fit waits, after what waits already. Returns
   * whether it kept a view of `blob` (in the backlog): else the caller may reuse its bytes.
   */
  dispatch(blob: Uint8Array): boolean {
    if (this.#backlog.length > 0) {
      this.#backlog.push(blob);
      return true;
    }
    return !this.#dispatchBlob(blob, false);
  }

  /** Records that go before everything waiting (a sub-item: finishing started items first). */
  putFirst(records: Uint8Array): void {
    this.#backlog.unshift(records);
  }

  clear(): void {
    this.#backlog = [];
    this.#emptied = true;
  }

  /**
   * Copies records from `blob` into rings, in spans of up to SPAN_RECORDS records per worker, each span
   * one memcpy; one record at a time while several workers have nothing to do, so that each starts.
   * Returns false (and keeps the rest in the backlog) when every ring is full.
   */
  #dispatchBlob(blob: Uint8Array, fromBacklog: boolean): boolean {
    const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
    let offset = 0;
    let pass = ++this.#pass;
    while (offset < blob.length) {
      const slot = this.#leastLoaded(pass);
      if (slot === undefined) {
        const rest = blob.subarray(offset);
        if (fromBacklog) this.#backlog[0] = rest;
        else this.#backlog.push(rest);
        return false;
      }
      // While another worker has nothing to do, one record each: a span of three slow items to one idle
      // worker left the one beside it idle while they ran one after another.
      const next = this.#writeSpan(slot, blob, view, offset, this.#anotherIdle ? 1 : SPAN_RECORDS);
      if (next === offset)
        slot.fullInPass = pass; // try the others before giving up
      else pass = ++this.#pass;
      offset = next;
    }
    if (fromBacklog) {
      this.#backlog.shift();
      if (this.#backlog.length === 0) this.#emptied = true;
    }
    this.oversize.release(blob); // all of it went: a feed joined in kept memory no longer holds it
    return true;
  }

  /**
   * The live worker with the fewest queued items that was not found full in this pass; notes whether
   * another such worker has nothing to do either (`#anotherIdle`).
   */
  #leastLoaded(pass: number): WorkerSlot | undefined {
    let best: WorkerSlot | undefined;
    let idle = 0;
    for (const slot of this.slots) {
      if (!slot.alive || slot.fullInPass === pass || slot.queued >= slot.queueCap) continue;
      if (slot.queued === 0) idle++;
      if (best === undefined || slot.queued < best.queued) best = slot;
    }
    this.#anotherIdle = idle > 1;
    return best;
  }

  /**
   * Writes up to `maxRecords` records from `offset` into the slot's ring (fewer past its queue cap);
   * returns where it stopped.
   */
  #writeSpan(slot: WorkerSlot, blob: Uint8Array, view: DataView, offset: number, maxRecords: number): number {
    const ring = slot.input;
    let position = slot.inputPosition;
    let spanStart = offset;
    let spanDestination = -1;
    let count = 0;
    const flush = (end: number) => {
      if (spanDestination >= 0 && end > spanStart) ring.data.set(blob.subarray(spanStart, end), spanDestination);
      spanDestination = -1;
    };
    const limit = Math.min(maxRecords, slot.queueCap - slot.queued);
    while (offset < blob.length && count < limit) {
      const length = recordLength(view, offset);
      const size = RECORD_HEADER_BYTES + length;
      if (length > ring.maxPayload) {
        flush(offset);
        const next = this.#writeOversizeInput(slot, position, view, blob, offset, length);
        if (next < 0) break;
        position = next;
      } else {
        const destination = ring.reserve(position, size);
        if (destination < 0) break;
        if (spanDestination >= 0 && destination !== spanDestination + (offset - spanStart)) flush(offset);
        if (destination === 0 && ring.offsetOf(position) !== 0) position = ring.padTo(position);
        if (spanDestination < 0) {
          spanDestination = destination;
          spanStart = offset;
        }
        position = (position + size) >>> 0;
      }
      offset += size;
      count++;
    }
    flush(offset);
    if (count > 0) {
      slot.inputPosition = position;
      slot.queued += count;
      ring.commit(position);
    }
    return offset;
  }

  /** An item too large for the ring: its bytes go in a shared buffer, a placeholder keeps its place. */
  #writeOversizeInput(
    slot: WorkerSlot,
    position: number,
    view: DataView,
    blob: Uint8Array,
    offset: number,
    length: number,
  ): number {
    const stage = recordStage(view, offset);
    const flags = recordFlags(view, offset);
    const id = recordId(view, offset);
    const next = slot.input.tryWrite(position, RecordKind.Input, stage, flags | FLAG_OVERSIZE, id, EMPTY);
    if (next < 0) return -1;
    const item = blob.subarray(offset + RECORD_HEADER_BYTES, offset + RECORD_HEADER_BYTES + length);
    // A feed sent in parts was joined in shared memory (see NodeServer): the worker reads the item there,
    // which holds that memory until the item is done (see KeptBuffers).
    let bytes = item;
    if (item.buffer instanceof SharedArrayBuffer) this.oversize.hold(item);
    else {
      bytes = this.oversize.take(length);
      bytes.set(item);
    }
    const key = itemKey(flags, id);
    slot.oversizeInputs.set(key, bytes);
    // Posted before the placeholder is committed: the worker gets the bytes no later than it needs them.
    slot.worker.postMessage({ type: "oversize-input", key, bytes });
    return next;
  }

  /** Moves waiting records into rings while there is room. */
  dispatchBacklog(): void {
    while (this.#backlog.length > 0 && this.#dispatchBlob(this.#backlog[0]!, true));
  }
}
