/**
 * How much work each worker's queue holds: enough that it still has work when the engine's thread
 * next comes to refill it, and no more, so that items wait in the backlog for whichever worker gets
 * free first (long items never sit behind a busy worker while another idles).
 */
import { COMBINER_QUEUE_MS } from "../../protocol/combiners.ts";

/**
 * Work queued per worker, on a machine where the engine's thread runs when it asks to: the worker's
 * commit linger (COMMIT_MS in worker.ts) and the engine's look at the rings (at most the results'
 * linger after a commit) twice over, so a worker has work left when the engine learns of what it
 * finished.
 */
const QUEUE_MS = 12;
/** Items under MIN_LINGER_TASK_MS commit by count, not by time: their queues keep the shorter span they had. */
const FAST_QUEUE_MS = 4;
/** Below this mean task time, results go out without a linger and workers commit by count. */
export const MIN_LINGER_TASK_MS = 0.5;
const MIN_QUEUE = 2;
/** The cap before anything was measured. */
export const INITIAL_QUEUE = 16;
/** However late the engine's thread runs, a queue holds at most this much more work. */
const MAX_LAG_MS = 50;

/**
 * A worker's queue cap, in records: its span of work (see above) over its mean time per record, plus
 * the places it keeps busy besides its queue when it runs `concurrency` items at once. The span grows
 * by twice the engine thread's lag (`ThreadLag`): a worker must not run dry while that thread waits
 * for a core, or it sleeps between refills, and on a loaded machine each sleep and wake-up costs more
 * than a short item.
 */
export function queueCap(meanMs: number, concurrency: number, combining: boolean, lagMs: number): number {
  const baseMs = combining ? COMBINER_QUEUE_MS : meanMs < MIN_LINGER_TASK_MS ? FAST_QUEUE_MS : QUEUE_MS;
  const spanMs = baseMs + 2 * Math.min(lagMs, MAX_LAG_MS);
  const queue = meanMs * MIN_QUEUE >= spanMs ? MIN_QUEUE : Math.ceil(spanMs / Math.max(meanMs, 1e-4));
  return queue + concurrency - 1;
}

/**
 * How late the engine's thread gets to its work, measured on its own timer: how long after its due
 * time each linger timer fires. A fraction of a millisecond on a quiet machine; several, and spikes of
 * a hundred, when every core is busy (many nodes on few cores, or other work beside the node).
 * It follows a later sample quickly (a quarter of the gap) and an earlier one slowly (1/32), so that
 * queues sized from it do not shrink between two late turns of a loaded thread.
 */
export class ThreadLag {
  #ms = 0;
  #due = Number.NaN;

  /** A timer was set to fire in `delayMs`. */
  armed(delayMs: number, now = performance.now()): void {
    this.#due = now + delayMs;
  }

  /** The timer fired. */
  fired(now = performance.now()): void {
    if (Number.isNaN(this.#due)) return;
    const lag = Math.max(0, now - this.#due);
    this.#due = Number.NaN;
    this.#ms += (lag - this.#ms) / (lag > this.#ms ? 4 : 32);
  }

  /** The lag as followed so far, in ms. */
  get ms(): number {
    return this.#ms;
  }
}
