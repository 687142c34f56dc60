/** The engine's record of each worker thread (see Engine): the engine alone reads and writes it. */
import { RecordKind, recordFlags, recordId, recordKind } from "../../protocol/record.ts";
import type { ByteRing } from "../ring.ts";
import type { RunningItems } from "../running-items.ts";
import { itemKey } from "../worker-messages.ts";

/** One worker thread, its two rings, and the engine's side of their positions. */
export interface WorkerSlot {
  index: number;
  worker: Worker;
  input: ByteRing;
  output: ByteRing;
  /** The engine's (producer's) position in the input ring. */
  inputPosition: number;
  /** The engine's (consumer's) position in the output ring. */
  outputPosition: number;
  /** Input records given to this worker and not yet Done. */
  queued: number;
  /** Most records this worker may have queued: about 4 ms of its measured work (see Engine's queue caps). */
  queueCap: number;
  /** Items the worker runs at once (its tasks' highest `concurrency`). */
  concurrency: number;
  /** Its items in progress, when they may finish out of order (concurrency above 1, or retries). */
  running: RunningItems | undefined;
  /** When its worker was ended at the task timeout: the positions of the items that were overdue. */
  overdue: number[] | undefined;
  /** Input records this worker finished (with `busyMilliseconds`, its mean time per record). */
  completed: number;
  /** Key of the last item this worker finished: after a crash, it and those before it are not run again. */
  lastDone: number;
  /**
   * With items finishing out of order (`running`): keys of items whose Done the engine took. The worker
   * marks a finished item's input Void only after it committed the Done; should it die in between, the
   * item is finished all the same and must not run again. Pruned to the items still in its input ring.
   */
  doneKeys: Set<number>;
  /** Bytes of oversize inputs, kept until Done so a replacement worker can get them again. */
  oversizeInputs: Map<number, Uint8Array>;
  /** Bytes of oversize outputs, arrived by message, waiting for their placeholder record. */
  oversizeOutputs: Map<number, ArrayBuffer>;
  /** Crashes per item key, for items whose worker died while running them (forgotten at their Done). */
  attempts: Map<number, number>;
  /** The oversize output ref draining waits for (0: none). */
  awaitingRef: number;
  /** A combiner's partial, read, waiting for the Done it goes with (committed right behind it). */
  partial: Uint8Array | undefined;
  /** Whether a wait for output data is armed. */
  armed: boolean;
  /** The dispatch pass in which this slot's ring was found full. */
  fullInPass: number;
  asleep: boolean;
  alive: boolean;
  lastError: string | undefined;
}

/** A slot for worker `index` on fresh rings, before its worker starts. */
export function newWorkerSlot(
  index: number,
  input: ByteRing,
  output: ByteRing,
  queueCap: number,
  concurrency = 1,
  running: RunningItems | undefined = undefined,
): WorkerSlot {
  return {
    index,
    worker: undefined as unknown as Worker,
    input,
    output,
    inputPosition: input.writePosition,
    outputPosition: output.readPosition,
    queued: 0,
    queueCap,
    concurrency,
    running,
    overdue: undefined,
    completed: 0,
    lastDone: -1,
    doneKeys: new Set(),
    oversizeInputs: new Map(),
    oversizeOutputs: new Map(),
    attempts: new Map(),
    awaitingRef: 0,
    partial: undefined,
    armed: false,
    fullInPass: 0,
    asleep: false,
    alive: false,
    lastError: undefined,
  };
}

/** Done keys a slot keeps before it drops those no longer in its input ring (see `WorkerSlot.doneKeys`). */
export const DONE_KEYS_PRUNE_AT = 4096;

/** Notes that the item `key` of a worker running items out of order is finished (see `WorkerSlot.doneKeys`). */
export function noteDone(slot: WorkerSlot, key: number): void {
  const keys = slot.doneKeys;
  keys.add(key);
  if (keys.size < DONE_KEYS_PRUNE_AT) return;
  // Keep those whose input the worker has not given back nor marked Void: the rest cannot run again.
  const input = slot.input;
  const kept = new Set<number>();
  for (let at = input.peek(input.readPosition); at >= 0; at = input.peek(input.after(at))) {
    if (recordKind(input.view, input.offsetOf(at)) === RecordKind.Void) continue;
    const inputKey = keyAt(input, at);
    if (keys.has(inputKey)) kept.add(inputKey);
  }
  slot.doneKeys = kept;
}

/** The item key of the record at `position` of `ring`. */
export function keyAt(ring: ByteRing, position: number): number {
  const offset = ring.offsetOf(position);
  return itemKey(recordFlags(ring.view, offset), recordId(ring.view, offset));
}
