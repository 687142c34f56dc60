/**
 * Each worker's own memory, for the memory guard (see memory-limit.ts): what the engine must know to
 * end the worker whose heap grows, and never an innocent one.
 *
 * A worker writes its JavaScript heap's size (`process.memoryUsage().heapUsed` is the worker's own heap
 * under Bun) into its slot now and then. A task stuck in synchronous code cannot write, so the slot also
 * holds the minor page faults of the worker's thread at that moment: a thread that touches memory it
 * never touched before takes one fault per page, and the kernel counts them per thread
 * (/proc/self/task/<tid>/stat), readable from the engine's thread while the worker is busy. The engine
 * estimates a worker's heap as what it reported plus the pages its thread faulted in since.
 *
 * Layout: per worker, HEAP_FIELDS float64s (see HeapField). Zero everywhere means "nothing reported".
 * On systems without per-thread /proc (not Linux) the estimate is the reported heap alone.
 */
import { readFileSync, readlinkSync } from "node:fs";

export const HeapField = {
  /** Bytes of the worker's heap at its last report. */
  Used: 0,
  /** Minor page faults of its thread at that report. */
  Faults: 1,
  /** Its thread's id (0: unknown). */
  Thread: 2,
  /**
   * A count, odd while the worker writes a report (an Int32 in this float64's bytes, used atomically):
   * the engine reads a report only between two looks that find it even and the same, never half of one.
   */
  Seq: 3,
} as const;
export const HEAP_FIELDS = 4;
/** The Int32 index of worker `index`'s `Seq` count. */
const seqAt = (index: number) => (index * HEAP_FIELDS + HeapField.Seq) * 2;
/** Looks a read takes at most before it settles for the heap reported without the faults since. */
const READ_TRIES = 4;

/** How often a worker reports while its tasks let it (between items, and while a task awaits). */
export const HEAP_REPORT_MS = 200;
/** Items run between looks at the clock (a look per item would cost the fastest tasks). */
const ITEMS_PER_LOOK = 64;

export function heapSlotsBytes(workers: number): number {
  return workers * HEAP_FIELDS * Float64Array.BYTES_PER_ELEMENT;
}

/** Minor page faults of a thread so far, from its /proc stat file; NaN where there is none. */
function minorFaults(statPath: string): number {
  try {
    const text = readFileSync(statPath, "latin1");
    // Fields after the command name (which may hold spaces, in parentheses): state is the first, minflt the 8th.
    return Number(text.slice(text.lastIndexOf(")") + 2).split(" ", 8)[7]);
  } catch {
    return Number.NaN;
  }
}

/** The id of the calling thread (0 where /proc/thread-self does not exist). */
function ownThreadId(): number {
  try {
    return Number(readlinkSync("/proc/thread-self").split("/").pop()) || 0;
  } catch {
    return 0;
  }
}

/** A worker's side: writes its heap into its slot, every HEAP_REPORT_MS at most. */
export class HeapReporter {
  readonly #slot: Float64Array;
  readonly #seq: Int32Array;
  readonly #seqAt: number;
  readonly #thread = ownThreadId();
  #lastReport = 0;
  #items = 0;
  #timer: ReturnType<typeof setInterval> | undefined;
  #idle = false;

  constructor(buffer: SharedArrayBuffer, index: number) {
    this.#slot = new Float64Array(buffer, index * HEAP_FIELDS * Float64Array.BYTES_PER_ELEMENT, HEAP_FIELDS);
    this.#seq = new Int32Array(buffer);
    this.#seqAt = seqAt(index);
  }

  /**
   * Reports now, then every HEAP_REPORT_MS while the worker has work (a task that awaits lets the timer
   * run). A worker that waits for input reports once more and then not again until it has work: its
   * heap does not grow meanwhile, and should a task's own timer grow it, the engine's estimate still
   * counts the pages its thread faults in since.
   */
  start(): void {
    this.report();
    this.busy();
  }

  /** The worker has work again. */
  busy(): void {
    this.#idle = false;
    this.#timer ??= setInterval(this.#tick, HEAP_REPORT_MS);
  }

  /** The worker waits for input with nothing in progress. */
  idle(): void {
    this.#idle = true;
  }

  /** Whether reports still come every HEAP_REPORT_MS (false once an idle worker made its last). */
  get reporting(): boolean {
    return this.#timer !== undefined;
  }

  readonly #tick = (): void => {
    this.report();
    if (!this.#idle) return;
    clearInterval(this.#timer);
    this.#timer = undefined;
  };

  /** Writes the heap now. */
  report(): void {
    this.#lastReport = performance.now();
    this.write(process.memoryUsage().heapUsed, this.#thread === 0 ? Number.NaN : minorFaults("/proc/thread-self/stat"));
  }

  /** Writes a report of `used` heap bytes when this thread had `faults` minor page faults (NaN: unknown). */
  write(used: number, faults: number): void {
    Atomics.add(this.#seq, this.#seqAt, 1); // odd: writing
    // Without a fault count to start from, the engine must not count faults at all: no thread, then.
    this.#slot[HeapField.Faults] = faults || 0;
    this.#slot[HeapField.Thread] = Number.isNaN(faults) ? 0 : this.#thread;
    this.#slot[HeapField.Used] = used;
    Atomics.add(this.#seq, this.#seqAt, 1); // even: written
  }

  /** Called once per item: reports when the last report is HEAP_REPORT_MS old. */
  afterItem(): void {
    if (++this.#items < ITEMS_PER_LOOK) return;
    this.#items = 0;
    if (performance.now() - this.#lastReport >= HEAP_REPORT_MS) this.report();
  }
}

/** The engine's side: reads the slots and estimates each worker's heap. */
export class WorkerHeaps {
  readonly #slots: Float64Array;
  readonly #seq: Int32Array;
  readonly #pageBytes = pageBytes();

  constructor(readonly buffer: SharedArrayBuffer) {
    this.#slots = new Float64Array(buffer);
    this.#seq = new Int32Array(buffer);
  }

  /** Forgets a worker's reports (its replacement reports afresh). */
  clear(index: number): void {
    this.#slots.fill(0, index * HEAP_FIELDS, (index + 1) * HEAP_FIELDS);
  }

  /** The id of worker `index`'s thread, as it reported it (0: unknown, or not reported yet). */
  thread(index: number): number {
    return this.#slots[index * HEAP_FIELDS + HeapField.Thread]!;
  }

  /** Bytes of worker `index`'s heap: its last report plus what its thread faulted in since. */
  estimate(index: number): number {
    const at = index * HEAP_FIELDS;
    const slots = this.#slots;
    const seq = this.#seq;
    const seqIndex = seqAt(index);
    let used = 0;
    for (let tries = 0; tries < READ_TRIES; tries++) {
      const before = Atomics.load(seq, seqIndex);
      used = slots[at + HeapField.Used]!;
      const thread = slots[at + HeapField.Thread]!;
      const reported = slots[at + HeapField.Faults]!;
      if ((before & 1) !== 0 || Atomics.load(seq, seqIndex) !== before) continue; // written meanwhile
      if (thread === 0) return used;
      const since = minorFaults(`/proc/self/task/${thread}/stat`) - reported;
      return since > 0 ? used + since * this.#pageBytes : used;
    }
    // Reports come at most every HEAP_REPORT_MS: this takes a worker writing one after another. Its
    // heap as last read, without the pages since, is less than it holds, never more.
    return used;
  }
}

/** The size of a memory page: resident bytes over resident pages, rounded to a power of two. */
function pageBytes(): number {
  try {
    const pages = Number(readFileSync("/proc/self/statm", "latin1").split(" ")[1]);
    const ratio = process.memoryUsage.rss() / pages;
    if (ratio > 0 && Number.isFinite(ratio)) return 2 ** Math.round(Math.log2(ratio));
  } catch {
    // no /proc: estimates are the reported heaps alone
  }
  return 4096;
}
