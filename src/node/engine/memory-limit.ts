/**
 * The memory a node may use. A Bun worker thread has no heap limit of its own (`resourceLimits` is not
 * enforced), so a task that runs away with memory would take the whole process down with it, every
 * other worker's items included. The engine watches the process's resident memory instead and, above
 * the limit, ends the worker whose own heap holds the memory (see worker-heap.ts); that worker is
 * replaced and its item retried like any crash (see Engine).
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

/**
 * The fastest the tasks of a node grow its memory, per millisecond, as far as the guard assumes: a few
 * threads touching fresh pages together (one thread faults in 2–4 GB/s).
 */
const FASTEST_GROWTH_BYTES_PER_MS = 8 * 1024 * 1024;
/** The longest the guard goes without reading the resident bytes, however far below the limit. */
const MAX_LOOK_GAP_MS = 1000;

/** What the guard knows of one worker, sampled each time it looks. */
export interface WatchedWorker {
  /** Bytes its own heap holds, as far as the engine can tell (see WorkerHeaps); 0 for a worker not running. */
  heapBytes: number;
}

/**
 * Picks the worker to end when the process is over its memory limit: the one whose own heap is the
 * largest, provided it holds at least `minHeapBytes` (an eighth of the limit by default). Over the
 * limit with no such worker, the memory is not in a worker (buffers of the node's own thread, say),
 * and ending one would cost an innocent item without freeing it: nobody is ended.
 *
 * After ending one it waits while that worker's memory goes back to the system (a terminated worker's
 * heap is freed over the next tens to hundreds of milliseconds), and judges again only once memory
 * grows again by `regrowthBytes` from the lowest it fell to, or after `settleMs`: so a second worker
 * is never ended for memory the first one still held.
 */
export class MemoryGuard {
  #settling = false;
  #lowest = 0;
  #settleEnd = 0;

  constructor(
    readonly limitBytes: number,
    readonly regrowthBytes = 64 * 1024 * 1024,
    readonly settleMs = 5000,
    readonly minHeapBytes = limitBytes / 8,
  ) {}

  /**
   * How long the process's resident bytes may go unread: the time memory growing at the fastest pace a
   * node's tasks can fault pages in (FASTEST_GROWTH_BYTES_PER_MS) would take to reach the limit, at most
   * MAX_LOOK_GAP_MS; 0 while settling. Reading them costs a file's open, read and close (about 8 µs on
   * an idle machine, far more on a busy one): at 16 nodes × 4 workers of 2 ms items, reading them on each
   * 50 ms watch was 5–10% of a node's socket thread; far below the limit, it now reads them once a second.
   */
  nextLookMs(residentBytes: number): number {
    if (this.#settling) return 0;
    const headroom = this.limitBytes - residentBytes;
    return Math.max(0, Math.min(MAX_LOOK_GAP_MS, headroom / FASTEST_GROWTH_BYTES_PER_MS));
  }

  /** Looks at the workers and the process's resident bytes; returns the index of the one to end now, or -1. */
  check(workers: readonly WatchedWorker[], residentBytes: number, now = performance.now()): number {
    if (this.#settling) {
      this.#lowest = Math.min(this.#lowest, residentBytes);
      const growing = residentBytes > this.#lowest + this.regrowthBytes;
      if (!growing && residentBytes > this.limitBytes && now < this.#settleEnd) return -1;
      this.#settling = false;
    }
    if (residentBytes <= this.limitBytes) return -1;
    let pick = -1;
    for (let index = 0; index < workers.length; index++) {
      const heap = workers[index]!.heapBytes;
      if (heap >= this.minHeapBytes && (pick < 0 || heap > workers[pick]!.heapBytes)) pick = index;
    }
    if (pick >= 0) {
      this.#settling = true;
      this.#lowest = residentBytes;
      this.#settleEnd = now + this.settleMs;
    }
    return pick;
  }
}
