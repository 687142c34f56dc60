/**
 * The memory a node may use. A Bun worker thread has no heap limit of its own (`resourceLimits` is not
 * enforced), so a task that runs away with memory would take the whole process down with it, every
 * other worker's items included. The engine watches the process's resident memory instead and, above
 * the limit, ends the worker most likely to blame; that worker is replaced and its item retried like
 * any crash (see Engine).
 */
import { readFileSync } from "node:fs";
import { totalmem } from "node:os";

/** Share of the machine's (or the container's) memory a node uses before it ends a worker. */
const DEFAULT_SHARE = 0.8;

/** The default limit: 80% of the memory this process may have (the cgroup's limit where it is lower). */
export function defaultMemoryLimit(): number {
  return Math.floor(Math.min(totalmem(), cgroupLimit()) * DEFAULT_SHARE);
}

function cgroupLimit(): number {
  for (const file of ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]) {
    try {
      const text = readFileSync(file, "utf8").trim();
      const bytes = Number(text);
      if (text !== "max" && Number.isFinite(bytes) && bytes > 0) return bytes;
    } catch {
      // not this cgroup version, or none
    }
  }
  return Number.POSITIVE_INFINITY;
}

/** What the guard knows of one worker, sampled each time it looks. */
export interface WatchedWorker {
  /** Whether the worker has an item to run (an idle one cannot be the one growing). */
  busy: boolean;
  /** Where it is in its input: unchanged between two looks means it is still on the same item. */
  position: number;
  /** Items it finished since it started (a leak grows with them). */
  completed: number;
}

/**
 * Picks the worker to end when the process is over its memory limit: of the busy workers, the one that
 * has been on its current item the longest (a runaway task never finishes its item), and among equals
 * the one that finished the most items (a leak grows with each).
 *
 * After ending one it waits while that worker's memory goes back to the system (a terminated worker's
 * heap is freed over the next tens to hundreds of milliseconds), and judges again only once memory
 * grows again by `regrowthBytes` from the lowest it fell to, or after `settleMs`: so a second worker
 * is never ended for memory the first one still held.
 */
export class MemoryGuard {
  readonly #since: number[] = [];
  readonly #positions: number[] = [];
  #settling = false;
  #lowest = 0;
  #settleEnd = 0;

  constructor(
    readonly limitBytes: number,
    readonly regrowthBytes = 64 * 1024 * 1024,
    readonly settleMs = 5000,
  ) {}

  /** Looks at the workers and the process's resident bytes; returns the index of the one to end now, or -1. */
  check(workers: readonly WatchedWorker[], residentBytes: number, now = performance.now()): number {
    for (let index = 0; index < workers.length; index++) {
      const worker = workers[index]!;
      if (!worker.busy || this.#positions[index] !== worker.position) {
        this.#positions[index] = worker.position;
        this.#since[index] = now;
      }
    }
    if (this.#settling) {
      this.#lowest = Math.min(this.#lowest, residentBytes);
      const growing = residentBytes > this.#lowest + this.regrowthBytes;
      if (!growing && residentBytes > this.limitBytes && now < this.#settleEnd) return -1;
      this.#settling = false;
    }
    if (residentBytes <= this.limitBytes) return -1;
    let pick = -1;
    for (let index = 0; index < workers.length; index++) {
      const worker = workers[index]!;
      if (!worker.busy) continue;
      if (
        pick < 0 ||
        this.#since[index]! < this.#since[pick]! ||
        (this.#since[index] === this.#since[pick] && worker.completed > workers[pick]!.completed)
      ) {
        pick = index;
      }
    }
    if (pick >= 0) {
      this.#positions[pick] = -1; // never a ring position: its replacement is timed afresh
      this.#settling = true;
      this.#lowest = residentBytes;
      this.#settleEnd = now + this.settleMs;
    }
    return pick;
  }
}
