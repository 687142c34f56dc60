/**
 * How the engine paces itself, from the workers' measured time per item and its own thread's lag: how
 * long finished results linger before they go out together, and how much work each worker's queue
 * holds — enough that it still has work when the engine's thread next comes to refill it, and no more,
 * so that items wait in the backlog for whichever worker gets free first (long items never sit behind
 * a busy worker while another idles).
 */
import { COMBINER_QUEUE_MS } from "../../protocol/combiners.ts";
import { busyMilliseconds, statsStride } from "../task-stats.ts";
import type { WorkerSlot } from "./worker-slot.ts";

/**
 * Work queued per worker, on a machine where the engine's thread runs when it asks to: more than the
 * worker's commit linger (COMMIT_MS in worker.ts) and the engine's look at the rings (at most the
 * results' linger after a commit) together, so a worker has work left when the engine learns of what
 * it finished; a thread that runs late adds twice its lag (below). Measured with the 10 ms linger (2 ms
 * items on 1 × 1, 1 × 4 and 2 × 4): no worker ever waited for input. Longer queues would hold items on
 * one worker that another could take, and make the root's window grow with them.
 */
const QUEUE_MS = 12;
/** Items under MIN_LINGER_TASK_MS commit by count, not by time: their queues keep the shorter span they had. */
const FAST_QUEUE_MS = 4;
/** Below this mean task time, results go out without a linger and workers commit by count. */
const MIN_LINGER_TASK_MS = 0.5;
const MIN_QUEUE = 2;
/**
 * A worker whose items take this many times longer than the longest wait for a refill (the results'
 * linger and twice the thread's lag) queues none behind the ones it runs: it idles at most 1% of its
 * time between items, and an item never waits behind a long one while a worker beside them idles (an
 * item of 1 s queued behind one of 5 s, the other worker done with its own: 6 s where 2 s do).
 */
const LONG_TASK_FACTOR = 100;
/** The cap before anything was measured. */
export const INITIAL_QUEUE = 16;
/** However late the engine's thread runs, a queue holds at most this much more work. */
const MAX_LAG_MS = 50;

/**
 * The results' linger: while other items are still running, results wait up to this long to go out
 * together, one frame and one wake-up of the root for many slow items. It is also how often the engine
 * looks at the output rings while slow items keep finishing: it drains them on this timer instead of
 * being woken by every worker's every commit. Each linger costs the socket thread a timer, a results
 * frame and the root's answers to it (its credit, its next feed): 100–300 µs of CPU on each side, with
 * caches cold after the wait, whatever the frame holds. So the linger is long enough for all the
 * workers together to finish about LINGER_ITEMS items, at least one timer tick and at most
 * MAX_RESULT_LINGER_MS — the bound on what a result ever waits here, whatever the task takes (Kafka's
 * producers linger 5 ms by default). Raised from 8 items and 4 ms: 2 ms items on 2 nodes × 4 workers,
 * runs of 20 000 items, cost the root 15–22 µs each instead of 39 and a node's socket thread 13–20 µs
 * instead of 34–38, at the same rate; `bun run bench scale` (runs of 2 s, 3 each, alternating): root
 * 33 µs instead of 38 (2 × 4) and 35 instead of 51 (1 × 4), socket thread 24 instead of 31 and 23 instead
 * of 33.
 */
const MAX_RESULT_LINGER_MS = 10;
const MIN_RESULT_LINGER_MS = 1;
const LINGER_ITEMS = 20;

/**
 * The results' linger (see above) for `places` items running at once at `meanMs` each; none for items
 * under MIN_LINGER_TASK_MS, whose results fill batches by themselves between two drains (and a timer
 * would hold them a whole millisecond: timers are not finer).
 */
export function resultLingerMs(meanMs: number, places: number): number {
  if (meanMs < MIN_LINGER_TASK_MS) return 0;
  const gathering = (LINGER_ITEMS * meanMs) / Math.max(1, places);
  return Math.min(MAX_RESULT_LINGER_MS, Math.max(MIN_RESULT_LINGER_MS, gathering));
}

/**
 * A worker's queue cap, in records: its span of work (QUEUE_MS; FAST_QUEUE_MS for short items;
 * COMBINER_QUEUE_MS with a combiner) over its mean time per record, at least MIN_QUEUE, plus the places
 * it keeps busy besides its queue when it runs `concurrency` items at once; for items of a second or
 * more (LONG_TASK_FACTOR), only the places it keeps busy. The span grows
 * by twice the engine thread's lag (`ThreadLag`): a worker must not run dry while that thread waits
 * for a core, or it sleeps between refills, and on a loaded machine each sleep and wake-up costs more
 * than a short item.
 */
export function queueCap(meanMs: number, concurrency: number, combining: boolean, lagMs: number): number {
  const lagSpanMs = 2 * Math.min(lagMs, MAX_LAG_MS);
  if (!combining && meanMs >= LONG_TASK_FACTOR * (MAX_RESULT_LINGER_MS + lagSpanMs)) return concurrency;
  const baseMs = combining ? COMBINER_QUEUE_MS : meanMs < MIN_LINGER_TASK_MS ? FAST_QUEUE_MS : QUEUE_MS;
  const spanMs = baseMs + lagSpanMs;
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

/** The engine's pacing of its workers, from their task stats so far and its thread's lag. */
export class Pacer {
  /** How late the engine's linger timer fires: the engine arms and fires it. */
  readonly lag = new ThreadLag();
  readonly #width: number;

  constructor(
    readonly slots: readonly WorkerSlot[],
    /** The workers' task stats (task-stats.ts), `tasks` tasks each. */
    readonly stats: Float64Array,
    readonly tasks: number,
    /** With a combiner, workers hold their Done for a partial's linger: their queues cover it. */
    readonly combining: boolean,
  ) {
    this.#width = statsStride(tasks);
  }

  /** The results' linger now (see `resultLingerMs`), from the workers' mean time per item so far. */
  resultLingerMs(): number {
    let busy = 0;
    let completed = 0;
    let places = 0;
    for (const slot of this.slots) {
      busy += this.#busyMs(slot);
      completed += slot.completed;
      if (slot.alive) places += slot.concurrency;
    }
    return resultLingerMs(completed === 0 ? 0 : busy / completed, places);
  }

  /** Sets each worker's queue cap from its mean time per record so far. */
  sizeQueues(): void {
    for (const slot of this.slots) {
      if (slot.completed === 0) continue;
      // A worker running `concurrency` items at once gets through one per mean time ÷ concurrency, and
      // keeps that many places busy besides its queue.
      const meanMs = this.#busyMs(slot) / slot.completed / slot.concurrency;
      slot.queueCap = queueCap(meanMs, slot.concurrency, this.combining, this.lag.ms);
    }
  }

  /** Task time worker `slot` spent so far. */
  #busyMs(slot: WorkerSlot): number {
    return busyMilliseconds(this.stats, slot.index * this.#width, this.tasks);
  }
}
