/**
 * A worker thread's loop: read an input record from the ring, decode it, run it through the taskchain
 * depth-first, encode each output into the output ring, then mark the item done. Only the engine
 * writes this worker's input ring and only this worker writes its output ring.
 *
 * The worker uses web-`Worker` messaging only (`self.onmessage` / `postMessage`), never
 * `worker_threads`: mixing the two in one Bun worker loses messages.
 */
import { flushLogSink, logContext, setLogSink } from "../../log/log.ts";
import { decode } from "../../protocol/codec.ts";
import { RECORD_HEADER_BYTES, RecordKind, recordFlags, recordKind, setRecordKind } from "../../protocol/record.ts";
import type { LogLine } from "../../protocol/messages.ts";
import { PARTIAL_MS } from "../../protocol/combiners.ts";
import { ByteRing, WAKE_CHECK_MS } from "../ring.ts";
import { HeapReporter } from "../worker-heap.ts";
import { RunningItems } from "../running-items.ts";
import { busyMilliseconds, workerTaskStats } from "../task-stats.ts";
import {
  Control,
  FLAG_ALONE,
  FLAG_OVERSIZE,
  type FromWorker,
  type SetupMessage,
  type ToWorker,
  itemKey,
} from "../worker-messages.ts";
import { Hunger, ShareRotation } from "./fan-out-sharing.ts";
import { InProgressItems } from "./in-progress.ts";
import { ItemRun, type RunContext, errorReport } from "./item-run.ts";
import { OutputWriter } from "./output-writer.ts";
import { WorkerPartial } from "./partial.ts";
import { ChainRunner, type ResolvedTask, loadTaskchain } from "./taskchain.ts";

const port = globalThis as unknown as {
  onmessage: ((event: MessageEvent<ToWorker>) => void) | null;
  postMessage(message: FromWorker, transfer?: ArrayBuffer[]): void;
};
const post = (message: FromWorker, transfer?: ArrayBuffer[]) => port.postMessage(message, transfer);
/** Items finished between commits (and input releases) while more input is waiting. */
const ITEMS_PER_COMMIT = 64;
/**
 * With a combiner, how long (task time: PARTIAL_MS), how many items and how many outputs a partial
 * gathers at most before it ships with its items' Done; it ships at once when the worker runs out of input.
 */
const PARTIAL_ITEMS = 4096;
const PARTIAL_OUTPUTS = 65_536;
/**
 * Task time between commits while more input is waiting: the worker's linger. A commit wakes the
 * engine, so committing each µs item would cost a wake-up (and, further on, a result frame) per item;
 * this bound keeps it to one per millisecond of work, and the engine keeps each worker's queue longer
 * than this (see Engine's queue caps), so a worker never runs dry waiting for it. It is short because
 * it is not a bound in wall time: finished items wait for the next commit through whatever the next
 * item does, and a long synchronous task cannot be interrupted to commit (4 ms held a finished item's
 * outputs behind a 20 s task). With no more input waiting, the worker commits at once.
 */
const COMMIT_MS = 1;
/** Items parked for a retry's backoff, at least, before the worker stops taking input (4 per place, else). */
const MIN_PARKED = 64;
/** What `ItemLoop`'s decode step returns for an item it could not decode (and reported). */
const UNDECODABLE = Symbol("undecodable");

/** Bytes of oversize inputs that arrived by message, and readers waiting for ones that have not. */
const oversizeInputs = new Map<number, Uint8Array>();
const oversizeWaiters = new Map<number, (bytes: Uint8Array) => void>();

port.onmessage = (event) => {
  const message = event.data;
  switch (message.type) {
    case "setup":
      void start(message);
      return;
    case "oversize-input": {
      const waiter = oversizeWaiters.get(message.key);
      if (waiter === undefined) oversizeInputs.set(message.key, message.bytes);
      else {
        oversizeWaiters.delete(message.key);
        waiter(message.bytes);
      }
      return;
    }
    case "stop":
      process.exit(0);
  }
};

function oversizeInput(key: number): Uint8Array | Promise<Uint8Array> {
  const bytes = oversizeInputs.get(key);
  if (bytes !== undefined) return bytes;
  return new Promise((resolve) => oversizeWaiters.set(key, resolve));
}

async function start(setup: SetupMessage): Promise<void> {
  let tasks: ResolvedTask[];
  let partial: WorkerPartial | undefined;
  try {
    for (const [key, bytes] of setup.oversize) oversizeInputs.set(key, bytes);
    setLogSink((lines: LogLine[]) => post({ type: "log", lines }));
    tasks = await loadTaskchain(setup.taskchain, setup.entries);
    if (setup.combine !== undefined) partial = await WorkerPartial.load(setup.combine, setup.entries);
  } catch (error) {
    post({ type: "setup-error", message: (error as Error).message });
    return;
  }
  post({ type: "ready" });
  await new ItemLoop(setup, tasks, partial).run();
}

/**
 * The worker's loop over its input ring. With concurrency 1 (and no retries) it runs one item at a time
 * in ring order, and each step returns a promise only when it had to wait, so a run of small synchronous
 * items costs no promise at all. Otherwise it starts items while a place is free (InProgressItems
 * bounds it) and each runs on its own, finishing in any order.
 */
class ItemLoop {
  readonly #tasks: ResolvedTask[];
  readonly #input: ByteRing;
  readonly #output: OutputWriter;
  readonly #control: Int32Array;
  readonly #stats: Float64Array;
  readonly #hunger: Hunger;
  readonly #runner: ChainRunner;
  readonly #context: RunContext;
  /** The item being run, when they run one at a time. */
  readonly #current: ItemRun;
  /** When several items run at once: what bounds them (else undefined). */
  readonly #inProgress: InProgressItems | undefined;
  /** Where the next record is read, and up to where input bytes were given back to the engine. */
  #position: number;
  #released: number;
  #sinceCommit = 0;
  #busyAtCommit = 0;
  #decodeError: unknown;
  /** The one wait for input armed while items are in progress (a second would race the first's flag). */
  #inputWait: Promise<void> | undefined;
  /** The memory guard's view of this worker: reported between items, and by timer while a task awaits. */
  readonly #heap: HeapReporter;
  /** With a combiner: the worker's partial, which outputs are folded into instead of written. */
  readonly #partial: WorkerPartial | undefined;

  constructor(setup: SetupMessage, tasks: ResolvedTask[], partial: WorkerPartial | undefined) {
    this.#tasks = tasks;
    this.#partial = partial;
    this.#input = new ByteRing(setup.input);
    this.#output = new OutputWriter(new ByteRing(setup.output), post, setup.maxItemBytes, partial);
    this.#control = new Int32Array(setup.control);
    this.#stats = workerTaskStats(setup.stats, setup.index, tasks.length);
    this.#hunger = new Hunger(this.#control, setup.index, setup.workers);
    const concurrency = setup.concurrency;
    this.#runner = new ChainRunner(tasks, this.#stats, logContext(), concurrency);
    this.#inProgress =
      setup.running === undefined
        ? undefined
        : new InProgressItems(
            concurrency,
            Math.max(MIN_PARKED, concurrency * 4),
            new RunningItems(setup.running),
            this.#sleepRequested,
          );
    this.#context = {
      tasks,
      output: this.#output,
      rotation: new ShareRotation(this.#hunger),
      inProgress: this.#inProgress,
      shareFanOut: setup.shareFanOut,
      partial,
    };
    this.#current = new ItemRun(this.#context);
    this.#position = this.#input.readPosition;
    this.#released = this.#position;
    this.#heap = new HeapReporter(setup.heap, setup.index);
    this.#heap.start();
  }

  run(): Promise<void> {
    return this.#inProgress === undefined ? this.#runInOrder() : this.#runConcurrently(this.#inProgress);
  }

  async #runInOrder(): Promise<void> {
    const input = this.#input;
    const run = this.#current;
    for (;;) {
      if (this.#sleepRequested()) await this.#sleep();
      if (input.closed) process.exit(0);
      const at = input.peek(this.#position);
      if (at < 0) {
        await this.#waitForInput();
        continue;
      }
      if (this.#skipVoid(at)) continue;
      const next = run.begin(input, at);
      // Say we are hungry while still busy with our last item, so shared work arrives before we idle.
      const more = input.peek(next) >= 0;
      if (more) this.#hunger.retract();
      else this.#hunger.announce();
      // With a combiner, the Done of finished items waits for the partial: ship it before the last item
      // waiting here runs, so that the engine (which counts this worker's queue by Done) refills it meanwhile.
      if (!more && this.#partial !== undefined && this.#sinceCommit > 0) await this.#settle();

      const item = (run.flags & FLAG_OVERSIZE) === 0 ? this.#decode(run) : await this.#decodeOversize(run);
      const running = this.#runItem(run, item);
      if (running !== undefined) {
        await this.#settle(); // an item that waits must not hold back what came before it
        await running;
      }
      // The item's log lines leave before its Done: a root that resets once all is done (and so ends
      // this worker) would otherwise lose the lines still waiting for this thread's next turn.
      flushLogSink();
      const folding = this.#fold(run);
      if (folding !== undefined) await folding;
      // With a combiner every Done carries the partial: one record for all (no split on the input's flags).
      const flags = this.#partial === undefined ? run.flags : run.itemFlags;
      const finishing = this.#output.finished(flags, run.id, run.outputs);
      if (finishing !== undefined) await finishing;
      this.#position = next;
      this.#heap.afterItem();
      if (!more || this.#dueToCommit()) {
        const settling = this.#settle();
        if (settling !== undefined) await settling;
      }
    }
  }

  /**
   * Starts items while a place is free; each runs on its own (`#runOne`) and gives its place back
   * when done. On `sleep()` no item starts, those in progress finish, then the worker pauses.
   */
  async #runConcurrently(inProgress: InProgressItems): Promise<void> {
    const input = this.#input;
    for (;;) {
      if (this.#sleepRequested()) {
        while (inProgress.active > 0) await inProgress.whenChanged();
        await this.#sleep();
        inProgress.wake();
      }
      if (input.closed) process.exit(0);
      if (!inProgress.hasRoom) {
        await inProgress.whenChanged();
        continue;
      }
      const at = input.peek(this.#position);
      if (at < 0) {
        await this.#waitForInputOrChange(inProgress);
        continue;
      }
      if (this.#skipVoid(at)) continue;
      if ((recordFlags(input.view, input.offsetOf(at)) & FLAG_ALONE) !== 0 && inProgress.active > 0) {
        await inProgress.whenChanged(); // it runs alone: once the items in progress are done
        continue;
      }
      const run = new ItemRun(this.#context);
      this.#position = run.begin(input, at);
      if (input.peek(this.#position) >= 0) this.#hunger.retract();
      else this.#hunger.announce();
      inProgress.start(run);
      void this.#runOne(run, inProgress);
      // Sync tasks finish inside `#runOne`: commit now and then, as the in-order loop does.
      if (this.#dueToCommit()) await this.#settle();
    }
  }

  /**
   * Runs a decoded item through the chain from its stage, or reports one that could not be decoded;
   * returns a promise only when it has to wait (an async task, or no room for the report).
   */
  #runItem(run: ItemRun, item: unknown): void | Promise<void> {
    if (item === UNDECODABLE) return this.#reportUndecodable(run);
    if (run.stage < this.#tasks.length) return this.#runner.run(item, run.stage, run);
  }

  /** One item of a worker that runs several at once, from decoding to its Done. */
  async #runOne(run: ItemRun, inProgress: InProgressItems): Promise<void> {
    const item = (run.flags & FLAG_OVERSIZE) === 0 ? this.#decode(run) : await this.#decodeOversize(run);
    const running = this.#runItem(run, item);
    if (running !== undefined) await running;
    flushLogSink();
    const folding = this.#fold(run);
    if (folding !== undefined) await folding;
    const finishing = this.#output.finished(run.itemFlags, run.id, run.outputs);
    if (finishing !== undefined) await finishing;
    inProgress.finish(run);
  }

  /** Whether finished items should be committed now, though more input waits. */
  #dueToCommit(): boolean {
    const sinceCommit = ++this.#sinceCommit;
    const partial = this.#partial;
    if (partial === undefined) return sinceCommit >= ITEMS_PER_COMMIT || this.#busy() - this.#busyAtCommit >= COMMIT_MS;
    if (sinceCommit >= PARTIAL_ITEMS || partial.folded >= PARTIAL_OUTPUTS) return true;
    return this.#busy() - this.#busyAtCommit >= PARTIAL_MS;
  }

  /** Folds a finished item's outputs into the partial; a combiner that throws is the item's task error. */
  #fold(run: ItemRun): void | Promise<void> {
    const partial = this.#partial;
    if (partial === undefined) return;
    const outputs = run.takeOutputs();
    if (outputs === undefined) return;
    const error = partial.fold(outputs);
    if (error === undefined) return;
    return run.writeError(this.#tasks.length - 1, errorReport({ name: `combiner ${partial.name}` }, error));
  }

  /** Moves past a Void record (an input given up after crashing its workers, or finished before a crash). */
  #skipVoid(at: number): boolean {
    const input = this.#input;
    const offset = input.offsetOf(at);
    if (recordKind(input.view, offset) !== RecordKind.Void) return false;
    this.#position = input.after(at);
    return true;
  }

  /** The item, decoded where it lies in the ring; UNDECODABLE (see `#decodeError`) when it cannot be. */
  #decode(run: ItemRun): unknown {
    const start = run.offset + RECORD_HEADER_BYTES;
    try {
      return decode(this.#input.data, start, start + run.length);
    } catch (error) {
      this.#decodeError = error;
      return UNDECODABLE;
    }
  }

  /** An oversize item: its bytes came (or are coming) by message. */
  async #decodeOversize(run: ItemRun): Promise<unknown> {
    try {
      await this.#settle();
      const key = itemKey(run.flags, run.id);
      const bytes = await oversizeInput(key);
      oversizeInputs.delete(key);
      return decode(bytes);
    } catch (error) {
      this.#decodeError = error;
      return UNDECODABLE;
    }
  }

  /** Reports the item that could not be decoded as a task error of the task it was to start at. */
  #reportUndecodable(run: ItemRun): void | Promise<void> {
    const task = this.#tasks[Math.min(run.stage, this.#tasks.length - 1)]!;
    const why = new TypeError(`the item could not be decoded: ${(this.#decodeError as Error).message}`);
    return run.writeError(run.stage, errorReport(task, why));
  }

  #busy(): number {
    return busyMilliseconds(this.#stats, 0, this.#tasks.length);
  }

  /**
   * Commits outputs and completions, then gives finished inputs' bytes back: completions are committed
   * before the inputs they finish are released, so a crash never loses one. Returns a promise only when
   * it had to wait for room (a slow task settles after every item).
   */
  #settle(): void | Promise<void> {
    if (this.#inProgress !== undefined) return this.#settleOutOfOrder(this.#inProgress);
    const settling = this.#output.settle();
    if (settling !== undefined) return settling.then(this.#settled);
    this.#settled();
  }

  readonly #settled = (): void => {
    if (this.#released !== this.#position) this.#input.release((this.#released = this.#position));
    this.#sinceCommit = 0;
    this.#busyAtCommit = this.#busy();
  };

  /**
   * The same when items finish out of order: input is given back up to the oldest item not finished.
   * A finished item behind it has its record turned Void once its Done is committed, so that after a
   * crash the replacement skips it instead of running it again.
   */
  async #settleOutOfOrder(inProgress: InProgressItems): Promise<void> {
    const committing = inProgress.takeFinished();
    this.#sinceCommit = 0;
    this.#busyAtCommit = this.#busy();
    await this.#output.settle();
    const input = this.#input;
    for (const run of committing) {
      run.committed = true;
      setRecordKind(input.view, run.offset, RecordKind.Void);
    }
    const upTo = inProgress.releasePoint(this.#position);
    if (this.#released !== upTo) input.release((this.#released = upTo));
  }

  /** Nothing to read: commits, says this worker is hungry, and waits for input (or for `sleep()`). */
  async #waitForInput(): Promise<void> {
    await this.#settle();
    this.#hunger.announce();
    this.#heap.idle();
    // Also woken by `sleep()`: the engine raises the control word, then nudges this ring.
    await this.#input.waitForDataOr(this.#position, this.#sleepRequested);
    if (this.#input.peek(this.#position) >= 0) this.#heap.busy(); // not after a look that found nothing
  }

  /** The same while items are in progress: also wakes when one of them finishes, parks or resumes. */
  async #waitForInputOrChange(inProgress: InProgressItems): Promise<void> {
    await this.#settle();
    if (this.#input.peek(this.#position) >= 0) return;
    this.#hunger.announce();
    if (this.#inputWait === undefined) {
      const wait = this.#input.waitForDataOr(this.#position, this.#sleepRequested);
      if (wait === undefined) return;
      this.#inputWait = wait.then(() => {
        this.#inputWait = undefined;
      });
    }
    if (inProgress.active === 0) this.#heap.idle();
    await Promise.race([this.#inputWait, inProgress.whenChanged()]);
    if (inProgress.active > 0 || this.#input.peek(this.#position) >= 0) this.#heap.busy();
  }

  readonly #sleepRequested = (): boolean => Atomics.load(this.#control, Control.Sleep) === 1;

  /** Commits, then pauses until the engine lifts its sleep request. */
  async #sleep(): Promise<void> {
    await this.#settle();
    this.#hunger.retract();
    post({ type: "asleep" });
    while (Atomics.load(this.#control, Control.Sleep) === 1) {
      const wait = Atomics.waitAsync(this.#control, Control.Sleep, 1, WAKE_CHECK_MS);
      if (wait.async) await wait.value;
    }
    post({ type: "awake" });
  }
}
