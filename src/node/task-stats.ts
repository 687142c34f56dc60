import { LATENCY_BUCKETS } from "../protocol/latency.ts";
import type { TaskSpec, TaskStats } from "../protocol/pipeline.ts";

/**
 * The shared task-stats layout: per worker, per task, five counters and the latency histogram's
 * buckets (see protocol/latency.ts) as doubles in one SharedArrayBuffer. Each worker adds to its own (taskchain.ts); the engine reads them all at any
 * time, without a message.
 */

/** Counters per task: the five below, then the latency histogram from LATENCY. */
export const STAT_FIELDS = 5 + LATENCY_BUCKETS;
/** A counter's place among its task's STAT_FIELDS. */
export const PROCESSED = 0;
export const DROPPED = 1;
export const ERRORS = 2;
export const MILLISECONDS = 3;
/** Calls run again after a retryable failure (a task entry's `retry`). */
export const RETRIES = 4;
export const LATENCY = 5;

/**
 * Doubles per worker in the shared stats buffer: its tasks' counters, padded to whole 128-byte
 * blocks so that two workers never write the same cache line (each item updates its counters).
 */
export function statsStride(tasks: number): number {
  return Math.ceil((tasks * STAT_FIELDS) / 16) * 16;
}

/** A shared stats buffer for `workers` workers running `tasks` tasks. */
export function allocateTaskStats(workers: number, tasks: number): SharedArrayBuffer {
  return new SharedArrayBuffer(workers * statsStride(tasks) * 8);
}

/** Worker `index`'s counters in the shared buffer: task `stage`'s start at `stage * STAT_FIELDS`. */
export function workerTaskStats(buffer: SharedArrayBuffer, index: number, tasks: number): Float64Array {
  return new Float64Array(buffer, index * statsStride(tasks) * 8, tasks * STAT_FIELDS);
}

/** Each task's counters summed over workers `fromWorker` to `toWorker` (exclusive), with its mean time per call. */
export function sumTaskStats(
  stats: Float64Array,
  tasks: readonly TaskSpec[],
  fromWorker: number,
  toWorker: number,
): TaskStats[] {
  const width = statsStride(tasks.length);
  return tasks.map((task, stage) => {
    let processed = 0;
    let dropped = 0;
    let errors = 0;
    let totalMs = 0;
    let retries = 0;
    const latency = new Array<number>(LATENCY_BUCKETS).fill(0);
    for (let worker = fromWorker; worker < toWorker; worker++) {
      const at = worker * width + stage * STAT_FIELDS;
      processed += stats[at + PROCESSED]!;
      dropped += stats[at + DROPPED]!;
      errors += stats[at + ERRORS]!;
      totalMs += stats[at + MILLISECONDS]!;
      retries += stats[at + RETRIES]!;
      for (let bucket = 0; bucket < LATENCY_BUCKETS; bucket++) latency[bucket]! += stats[at + LATENCY + bucket]!;
    }
    const calls = processed + errors + retries; // a retried call took its time too
    const meanMs = calls > 0 ? totalMs / calls : 0;
    return { task: task.export, processed, dropped, errors, totalMs, meanMs, latency, retries };
  });
}

/** Milliseconds one worker spent in its tasks so far: its counters start at `offset` in `stats`. */
export function busyMilliseconds(stats: Float64Array, offset: number, tasks: number): number {
  let total = 0;
  for (let stage = 0; stage < tasks; stage++) total += stats[offset + stage * STAT_FIELDS + MILLISECONDS]!;
  return total;
}
