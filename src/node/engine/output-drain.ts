import { RecordBatchBuilder, decode, encode } from "../../protocol/codec.ts";
import {
  DONE_ENTRY_BYTES,
  DoneList,
  FLAG_SUB_ITEM,
  RECORD_HEADER_BYTES,
  RecordKind,
  type TaskErrorReport,
  doneEntryId,
  doneEntryOutputs,
  readU32,
  recordFlags,
  recordId,
  recordKind,
  recordLength,
  recordStage,
  setRecordItem,
} from "../../protocol/record.ts";
import type { TaskSpec } from "../../protocol/pipeline.ts";
import { FLAG_OVERSIZE, SHARE_TARGET_SHIFT, itemKey } from "../worker-messages.ts";
import type { InputDispatcher } from "./input-dispatch.ts";
import { ItemTracker } from "./item-tracker.ts";
import { type WorkerSlot, noteDone } from "./worker-slot.ts";

/** What the drain hands its owner. */
export interface ResultEvents {
  /**
   * Output, TaskError, Failed and Done records for root items, ready to frame (`finishFrame`) or to
   * take (`takeRecords`). Records left in the batch when this returns are dropped, so a reader that is
   * done by then may read them in place (`records()`).
   */
  onResults(batch: RecordBatchBuilder): void;
  /** A task threw, or an item was given up; the item's record is in the results too. */
  onTaskError?(report: TaskErrorReport & { item: number; stage: number; failed: boolean }): void;
}

/**
 * The engine's output side, the mirror of `InputDispatcher`: moves the workers' output records into
 * result batches for the owner, in spans of bytes, without decoding an item. Along the way it counts
 * completions (Done records: a root item is finished once all its shared parts are), gives shared
 * sub-items to the worker that asked for them, and fetches oversize outputs' bytes.
 */
export class OutputDrain {
  /** While set, no results are handed out: the owner's socket or consumer is slow. */
  paused = false;
  /** Root items finished since the start. */
  rootsFinished = 0;
  readonly #slots: readonly WorkerSlot[];
  readonly #tasks: readonly TaskSpec[];
  readonly #input: InputDispatcher;
  readonly #events: ResultEvents;
  readonly #resultBatchBytes: number;
  readonly #tracker = new ItemTracker();
  readonly #results = new RecordBatchBuilder(256 * 1024);
  /** Root items finished since the last Done record went into the results. */
  readonly #finished = new DoneList(1024);

  constructor(
    slots: readonly WorkerSlot[],
    tasks: readonly TaskSpec[],
    input: InputDispatcher,
    events: ResultEvents,
    resultBatchBytes: number,
  ) {
    this.#slots = slots;
    this.#tasks = tasks;
    this.#input = input;
    this.#events = events;
    this.#resultBatchBytes = resultBatchBytes;
  }

  /** Whether results wait to be handed out. */
  get holdsResults(): boolean {
    return this.#results.count > 0 || this.#finished.count > 0;
  }

  /**
   * Moves a worker's output records into the result batch. Plain records are copied in spans; records
   * of shared sub-items get their root item's id first; Done and Share records are handled here. A
   * `dying` worker's records are all taken, even while paused or with oversize bytes missing. Returns
   * whether it found any record.
   */
  drain(slot: WorkerSlot, dying = false): boolean {
    const ring = slot.output;
    const view = ring.view;
    const start = slot.outputPosition;
    let position = start;
    let spanOffset = -1;
    let spanEnd = 0;
    let spanCount = 0;
    const flushSpan = () => {
      if (spanCount > 0) this.#results.appendRecords(ring.data.subarray(spanOffset, spanEnd), spanCount);
      spanCount = 0;
      spanOffset = -1;
    };
    for (;;) {
      const at = ring.peek(position);
      if (at < 0) break;
      const offset = ring.offsetOf(at);
      const kind = recordKind(view, offset);
      const stage = recordStage(view, offset);
      const flags = recordFlags(view, offset);
      const id = recordId(view, offset);
      const length = recordLength(view, offset);
      const size = RECORD_HEADER_BYTES + length;
      if (spanCount > 0 && offset !== spanEnd) flushSpan();

      if (kind === RecordKind.Output || kind === RecordKind.TaskError || kind === RecordKind.Partial) {
        if ((flags & FLAG_OVERSIZE) !== 0) {
          flushSpan();
          const ref = readU32(ring.data, offset + RECORD_HEADER_BYTES); // the placeholder's payload
          const bytes = slot.oversizeOutputs.get(ref);
          if (bytes === undefined && !dying) {
            slot.awaitingRef = ref; // its message is on the way; drain on when it arrives
            break;
          }
          slot.oversizeOutputs.delete(ref);
          if (kind === RecordKind.Partial) slot.partial = bytes === undefined ? undefined : new Uint8Array(bytes);
          else if (bytes !== undefined) {
            // Its own memory, which nothing writes again: it goes to the socket as it is.
            this.#results.appendByReference(kind, stage, 0, this.#tracker.rootOf(flags, id), new Uint8Array(bytes));
          }
        } else if (kind === RecordKind.Partial) {
          flushSpan();
          slot.partial = ring.data.slice(offset + RECORD_HEADER_BYTES, offset + size);
        } else {
          if ((flags & FLAG_SUB_ITEM) !== 0) {
            setRecordItem(view, offset, 0, this.#tracker.rootOf(flags, id));
          }
          if (spanCount === 0) spanOffset = offset;
          spanEnd = offset + size;
          spanCount++;
        }
        if (kind === RecordKind.TaskError) this.#reportTaskError(ring.data, offset, length, stage, flags, id);
      } else if (kind === RecordKind.Done) {
        flushSpan();
        const data = ring.data;
        for (let at = offset + RECORD_HEADER_BYTES, end = offset + size; at < end; at += DONE_ENTRY_BYTES) {
          this.#onDone(slot, flags, doneEntryId(data, at), doneEntryOutputs(data, at));
        }
        if (slot.partial !== undefined) {
          // Right behind the Done of the items it covers, in the same batch (a combiner shares no fan-out:
          // each of those items is finished by this Done).
          this.#appendFinished();
          this.#results.append(RecordKind.Partial, 0, 0, 0, slot.partial);
          slot.partial = undefined;
        }
      } else if (kind === RecordKind.Share) {
        flushSpan();
        this.#onShare(slot, stage, flags, id, ring.data.subarray(offset + RECORD_HEADER_BYTES, offset + size));
      }
      position = (at + size) >>> 0;
      if (this.#results.byteLength + (spanCount > 0 ? spanEnd - spanOffset : 0) >= this.#resultBatchBytes) {
        flushSpan();
        ring.release(position);
        slot.outputPosition = position;
        this.flush();
        if (this.paused && !dying) return true;
      }
    }
    flushSpan();
    ring.release(position);
    slot.outputPosition = position;
    return position !== start;
  }

  /** Hands the results gathered so far to the owner, with the Done of every root item finished. */
  flush(): void {
    this.#appendFinished();
    if (this.#results.count === 0) return;
    this.#events.onResults(this.#results);
    this.#results.clear();
  }

  /**
   * Reports the input record at `offset` of the slot's input ring as failed after `attempts` attempts
   * that each took its worker down, and counts it done.
   */
  giveUp(slot: WorkerSlot, offset: number, attempts: number, reason: string): void {
    const view = slot.input.view;
    const stage = recordStage(view, offset);
    const flags = recordFlags(view, offset) & ~FLAG_OVERSIZE;
    const id = recordId(view, offset);
    const root = this.#tracker.rootOf(flags, id);
    const message = `gave up after ${attempts} attempts, each of which took its worker down: ${reason}`;
    const task = this.#tasks[stage]?.export ?? "?";
    this.#results.append(RecordKind.Failed, stage, 0, root, encode({ task, message, attempts }));
    this.#events.onTaskError?.({ task, message, item: root, stage, failed: true, attempts });
    // No run of it finished (what its failed runs wrote was handed out). Nor is it the worker's Done:
    // items before it in the ring may still be unfinished, so it does not move `lastDone`.
    this.#onDone(slot, flags, id, 0, false);
  }

  /**
   * Says that the outputs the input record at `offset` of `view` (a worker's input ring) gave so far
   * are void: its worker died, and it runs again (or is given up). Follows every output the dead
   * worker wrote.
   */
  retract(view: DataView, offset: number): void {
    const root = this.#tracker.rootOf(recordFlags(view, offset) & ~FLAG_OVERSIZE, recordId(view, offset));
    this.#results.append(RecordKind.Retract, 0, 0, root, new Uint8Array(0));
  }

  /** Forgets every shared sub-item (on reset). */
  clear(): void {
    this.#tracker.clear();
  }

  #reportTaskError(data: Uint8Array, offset: number, length: number, stage: number, flags: number, id: number): void {
    if (this.#events.onTaskError === undefined) return;
    let report: { task?: string; message?: string; stack?: string } = {};
    try {
      report = decode(data, offset + RECORD_HEADER_BYTES, offset + RECORD_HEADER_BYTES + length) as typeof report;
    } catch {
      // reported with what we have
    }
    this.#events.onTaskError({
      task: report.task ?? this.#tasks[stage]?.export ?? "?",
      message: report.message ?? "unknown error",
      stack: report.stack,
      item: this.#tracker.rootOf(flags, id),
      stage,
      failed: false,
    });
  }

  /** An item is finished: by its worker's Done (`byWorker`), or given up. */
  #onDone(slot: WorkerSlot, flags: number, id: number, outputs: number, byWorker = true): void {
    slot.queued--;
    slot.completed++;
    const key = itemKey(flags, id);
    if (byWorker) slot.lastDone = key;
    if (byWorker && slot.running !== undefined) noteDone(slot, key);
    if (slot.oversizeInputs.size > 0) {
      const bytes = slot.oversizeInputs.get(key);
      if (bytes !== undefined) {
        slot.oversizeInputs.delete(key);
        this.#input.oversize.release(bytes);
      }
    }
    if (slot.attempts.size > 0) slot.attempts.delete(key);
    const root = this.#tracker.finish(flags, id, outputs);
    if (root < 0) return;
    if (this.#finished.add(root, this.#tracker.finishedOutputs)) this.#appendFinished();
    this.rootsFinished++;
  }

  /** Appends the root items finished so far as one Done record (after their outputs). */
  #appendFinished(): void {
    if (this.#finished.count === 0) return;
    this.#results.append(RecordKind.Done, 0, 0, this.#finished.lastId, this.#finished.take());
  }

  /** A worker hands over a sub-item for the hungry worker it claimed (or, if that one is gone, the least loaded). */
  #onShare(from: WorkerSlot, stage: number, flags: number, id: number, payload: Uint8Array): void {
    const subId = this.#tracker.share(flags, id);
    let target: WorkerSlot | undefined = this.#slots[(flags >>> SHARE_TARGET_SHIFT) - 1];
    if (target === undefined || !target.alive) {
      target = undefined;
      for (const slot of this.#slots) {
        if (slot.alive && slot !== from && (target === undefined || slot.queued < target.queued)) target = slot;
      }
      target ??= from;
    }
    if (payload.length <= target.input.maxPayload) {
      const next = target.input.tryWrite(target.inputPosition, RecordKind.Input, stage, FLAG_SUB_ITEM, subId, payload);
      if (next >= 0) {
        target.inputPosition = next;
        target.queued++;
        target.input.commit(next);
        return;
      }
    }
    // No room right now: the sub-item waits in front of the backlog (finishing started items first).
    const record = new RecordBatchBuilder(RECORD_HEADER_BYTES + payload.length);
    record.append(RecordKind.Input, stage, FLAG_SUB_ITEM, subId, payload);
    this.#input.putFirst(record.takeRecords());
  }
}
