import type { LogLine } from "../protocol/messages.ts";
import type { BuiltInCombiner } from "../protocol/combiners.ts";
import type { TaskSpec } from "../protocol/pipeline.ts";

/**
 * What the engine and its workers tell each other through `postMessage`: control only. Items travel
 * through the rings (ring.ts), except items too large for a ring, whose bytes take the oversize path:
 * shared memory announced here (a view of it: an item of a feed joined from parts lies inside the
 * feed's), with a small placeholder record in the ring keeping their place.
 */

/** Slots of the control array all workers share with the engine. */
export const Control = {
  /** 1 while the engine wants the workers asleep. */
  Sleep: 0,
  /** How many workers are hungry now (the fast path: one load per sub-item). */
  HungryCount: 1,
  /** From here, one slot per worker: 1 while that worker is about to run out of input. */
  Hungry: 2,
} as const;

/** Int32 slots of the control array for `workers` workers. */
export function controlSlots(workers: number): number {
  return Control.Hungry + workers;
}

/** Share records name their target worker in the flags' high byte (index + 1; 0: any). */
export const SHARE_TARGET_SHIFT = 8;

/** Record flag: the payload is not in the ring; it travels as a buffer announced by `postMessage`. */
export const FLAG_OVERSIZE = 2;

/**
 * Input record flag, set by the engine on an item that was in progress when its worker died (and
 * others with it): a worker running several at once runs it alone, so a poison item takes down only
 * itself next time, not the items that happened to run beside it.
 */
export const FLAG_ALONE = 4;

/** The key of a record's item in Maps: sub-item ids and root ids live in separate namespaces. */
export function itemKey(flags: number, id: number): number {
  return (flags & 1) * 0x1_0000_0000 + id;
}

export interface SetupMessage {
  type: "setup";
  index: number;
  workers: number;
  taskchain: TaskSpec[];
  entries: Record<string, string>;
  input: SharedArrayBuffer;
  output: SharedArrayBuffer;
  control: SharedArrayBuffer;
  stats: SharedArrayBuffer;
  /** Where the worker reports its own heap (see worker-heap.ts). */
  heap: SharedArrayBuffer;
  /** Items the worker may have in progress at once (its tasks' highest `concurrency`). */
  concurrency: number;
  /**
   * The shared table of items in progress (running-items.ts), for a worker whose items may finish out
   * of order (concurrency above 1, or retries); undefined: one at a time, in ring order.
   */
  running?: SharedArrayBuffer;
  /** Largest output a task may give, encoded: a larger one is a task error for its item. */
  maxItemBytes: number;
  /** Whether this worker may hand parts of a large fan-out to idle workers. */
  shareFanOut: boolean;
  /** A combiner folding this worker's outputs (see protocol/combiners.ts). */
  combine?: TaskSpec | BuiltInCombiner;
  /** Oversize input bytes this worker must have before it reads their placeholders (after a restart). */
  oversize: Array<[key: number, bytes: Uint8Array]>;
}

export type ToWorker =
  | SetupMessage
  /** Bytes of an input item too large for the ring, in shared memory; its placeholder record has key `key`. */
  | { type: "oversize-input"; key: number; bytes: Uint8Array }
  | { type: "stop" };

export type FromWorker =
  | { type: "ready" }
  | { type: "setup-error"; message: string }
  /** Bytes of an output too large for the ring; the Output placeholder's payload is `ref`. */
  | { type: "oversize-output"; ref: number; bytes: ArrayBuffer }
  | { type: "asleep" }
  | { type: "awake" }
  | { type: "log"; lines: LogLine[] };
