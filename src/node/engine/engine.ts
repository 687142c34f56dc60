import type { KeptBuffers } from "../../protocol/kept-buffers.ts";
import { availableParallelism } from "node:os";
import { SetupError, StateError } from "../../errors.ts";
import { DEFAULT_MAX_ITEM_BYTES } from "../../protocol/limits.ts";
import type { BuiltInCombiner } from "../../protocol/combiners.ts";
import type { TaskSpec, TaskStats } from "../../protocol/pipeline.ts";
import { WaitList } from "../../wait-list.ts";
import { ByteRing } from "../ring.ts";
import { RunningItems } from "../running-items.ts";
import { allocateTaskStats, sumTaskStats } from "../task-stats.ts";
import { Control, controlSlots } from "../worker-messages.ts";
import { InputDispatcher, countFeedRecords } from "./input-dispatch.ts";
import { OutputDrain, type ResultEvents } from "./output-drain.ts";
import { type SupervisionOptions, type WorkerEvents, WorkerSupervisor } from "./worker-supervisor.ts";
import { type WorkerSlot, newWorkerSlot } from "./worker-slot.ts";
import { INITIAL_QUEUE, Pacer } from "./pacing.ts";

export interface EngineOptions extends SupervisionOptions {
  /** Worker threads (default: the number of cores). */
  workers?: number;
  /** Bytes of each worker's input ring (default 1 MiB). */
  inputRingBytes?: number;
  /** Bytes of each worker's output ring (default 1 MiB). */
  outputRingBytes?: number;
  /** Result batches are handed out once they reach about this size (default 256 KiB). */
  resultBatchBytes?: number;
  /** Items each worker has in progress at once, for tasks without their own `concurrency` (default 1). */
  concurrency?: number;
  /** Largest output a task may give, encoded; a larger one is a task error (default 1 GiB). */
  maxItemBytes?: number;
  /** Whether workers may hand parts of a large fan-out to idle workers (default true). */
  shareFanOut?: boolean;
  /** A combiner folding the outputs in the workers (see protocol/combiners.ts). */
  combine?: TaskSpec | BuiltInCombiner;
}

/** What the engine tells its owner. */
export interface EngineEvents extends ResultEvents, WorkerEvents {}

/**
 * The node's engine: N worker threads running a taskchain, fed through SharedArrayBuffer rings.
 *
 * Its thread moves bytes and keeps counts; it never decodes an item. Input batches (`dispatch`) are
 * copied span by span into the least loaded workers' rings (InputDispatcher); what bounds each
 * worker's queue is its queue cap (pacing.ts), a few milliseconds of its measured work. Outputs,
 * completions and errors are drained from the output rings into result batches for the owner
 * (OutputDrain). When the owner pauses output (its socket or its consumer is slow), the output rings
 * fill, the workers wait, and input stops too: no buffer grows without bound. A worker that dies is replaced on the same rings
 * (WorkerSupervisor); the item it was running is retried up to `maxAttempts` times, then reported as
 * failed.
 */
export class Engine {
  readonly workerCount: number;
  readonly #tasks: TaskSpec[];
  readonly #control: Int32Array;
  readonly #statsView: Float64Array;
  readonly #slots: WorkerSlot[] = [];
  /** Copies input into the workers' rings; keeps what does not fit. */
  readonly #input: InputDispatcher;
  /** Moves output from the workers' rings into result batches. */
  readonly #output: OutputDrain;
  readonly #supervisor: WorkerSupervisor;
  readonly #waits = new WaitList();
  /** Root items accepted since the start (those not finished are in flight). */
  #accepted = 0;
  #drainScheduled = false;
  /** Since when results wait to be handed out (NaN: none wait). */
  #resultsHeldSince = Number.NaN;
  /** The timer ending the linger: it drains the rings again and hands out what is held by then. */
  #lingerTimer: ReturnType<typeof setTimeout> | undefined;
  /** The results' linger, the workers' queue caps, and how late that timer fires (which they cover). */
  readonly #pacer: Pacer;
  #stopped = false;
  #sleeping = false;

  private constructor(
    tasks: TaskSpec[],
    entries: Record<string, string>,
    options: EngineOptions,
    events: EngineEvents,
  ) {
    this.workerCount = Math.max(1, options.workers || availableParallelism());
    const concurrency = options.concurrency ?? 1;
    tasks = tasks.map((task) => ({ ...task, concurrency: task.concurrency ?? concurrency }));
    const perWorker = Math.max(...tasks.map((task) => task.concurrency!));
    // Items finish out of order when several run at once, or when one waits for a retry meanwhile.
    const outOfOrder = perWorker > 1 || tasks.some((task) => task.retry != null);
    this.#tasks = tasks;
    const control = new SharedArrayBuffer(controlSlots(this.workerCount) * 4);
    this.#control = new Int32Array(control);
    const stats = allocateTaskStats(this.workerCount, tasks.length);
    this.#statsView = new Float64Array(stats);
    const inputBytes = options.inputRingBytes ?? 1 << 20;
    const outputBytes = options.outputRingBytes ?? 1 << 20;
    for (let index = 0; index < this.workerCount; index++) {
      const input = new ByteRing(ByteRing.allocate(inputBytes));
      const output = new ByteRing(ByteRing.allocate(outputBytes));
      const running = outOfOrder ? new RunningItems(RunningItems.allocate(perWorker)) : undefined;
      this.#slots.push(newWorkerSlot(index, input, output, INITIAL_QUEUE + perWorker - 1, perWorker, running));
    }
    this.#input = new InputDispatcher(this.#slots);
    this.#pacer = new Pacer(this.#slots, this.#statsView, tasks.length, options.combine !== undefined);
    const resultBatchBytes = options.resultBatchBytes ?? 256 * 1024;
    this.#output = new OutputDrain(this.#slots, tasks, this.#input, events, resultBatchBytes);
    // A combiner's partial covers whole items: a fan-out shared out would split one (see combiners.ts).
    const shareFanOut = (options.shareFanOut ?? true) && options.combine === undefined;
    const maxItemBytes = options.maxItemBytes ?? DEFAULT_MAX_ITEM_BYTES;
    const setup = { tasks, entries, control, stats, maxItemBytes, shareFanOut, combine: options.combine };
    this.#supervisor = new WorkerSupervisor(this.#slots, setup, options, this.#output, events, {
      wake: () => this.#scheduleDrain(),
      settle: () => this.#waits.settle(),
      arm: (slot) => this.#arm(slot),
    });
  }

  /**
   * Starts the workers and resolves once every one of them has loaded the taskchain. If any fails, all
   * are stopped and the promise rejects with every distinct setup error.
   */
  static async start(
    tasks: TaskSpec[],
    entries: Record<string, string>,
    options: EngineOptions,
    events: EngineEvents,
  ): Promise<Engine> {
    if (tasks.length === 0) throw new SetupError("the taskchain is empty: give at least one task");
    if (tasks.length > 255) throw new SetupError(`a taskchain has at most 255 tasks, got ${tasks.length}`);
    const engine = new Engine(tasks, entries, options, events);
    const errors = await engine.#supervisor.start();
    if (errors.length > 0) {
      await engine.reset();
      throw new SetupError(errors.length === 1 ? errors[0]! : `workers failed to set up:\n${errors.join("\n")}`);
    }
    for (const slot of engine.#slots) engine.#arm(slot);
    return engine;
  }

  // ---- input ------------------------------------------------------------------------------------

  /**
   * Takes a batch of Input records (a root's feed blob) and copies them, unchanged, into the workers'
   * rings; what does not fit waits in the backlog, in order. Throws a `ProtocolError` (and takes none
   * of the batch) when a record is malformed, not an Input, or names a task past the chain's end
   * (`records`, when given, is the count `countFeedRecords` already checked). Returns whether it kept a
   * view of `blob` (records waiting for room): else the caller may reuse its bytes.
   */
  dispatch(blob: Uint8Array, records = countFeedRecords(blob, this.#tasks.length)): boolean {
    if (this.#stopped) throw new StateError("the engine was reset; set the pipeline up again");
    this.#accepted += records;
    this.#supervisor.busy();
    // Caps from what the workers measured so far: a run of long items that never stood in the backlog
    // (where the drain sizes them) left the first caps, and its next items queued behind long ones.
    this.#pacer.sizeQueues();
    return this.#input.dispatch(blob);
  }

  /** Tasks in the chain. */
  get taskCount(): number {
    return this.#tasks.length;
  }

  /** Shared memory for oversize items and for feeds joined from parts, kept for the next ones. */
  get oversizeBuffers(): KeptBuffers {
    return this.#input.oversize;
  }

  /** Root items accepted and not yet finished. */
  get inFlight(): number {
    return this.#accepted - this.#output.rootsFinished;
  }

  /**
   * Workers whose threads said they are out of input and that no fan-out has claimed since (see
   * fan-out-sharing.ts): unlike `idleWorkers`, which is the engine's own count, this is the workers' word.
   */
  get workersAskingForShares(): number {
    return Atomics.load(this.#control, Control.HungryCount);
  }

  /** Bytes waiting for ring space. */
  get backlogBytes(): number {
    return this.#input.backlogBytes;
  }

  /**
   * How late this thread runs its timers, as followed (see ThreadLag): near 0 on a node with cores to
   * spare; milliseconds when its cores are all busy (the workers' queues grow to cover it). Measured on
   * the results' linger timer, which runs while items of half a millisecond or more keep finishing:
   * between such runs it keeps its last value (0 before the first).
   */
  get lagMs(): number {
    return this.#pacer.lag.ms;
  }

  // ---- output -----------------------------------------------------------------------------------

  /** Stops handing out results; workers stop once their output rings are full. */
  pauseOutput(): void {
    this.#output.paused = true;
  }

  resumeOutput(): void {
    if (!this.#output.paused) return;
    this.#output.paused = false;
    this.#scheduleDrain();
  }

  #scheduleDrain(): void {
    if (this.#drainScheduled || this.#stopped) return;
    this.#drainScheduled = true;
    // setImmediate, not a microtask: a stream of results must not starve the socket's own I/O.
    setImmediate(this.#drainAll);
  }

  /**
   * The engine's pump: output out of the rings, backlog into them, results to the owner, waits settled.
   * Then it waits for the workers' next commits, or, while slow items keep finishing, for the end of
   * the results' linger (see `resultLingerMs` in pacing.ts): workers commit without a wake-up when nobody waits.
   */
  readonly #drainAll = (): void => {
    this.#drainScheduled = false;
    if (this.#stopped) return;
    let found = false;
    for (const slot of this.#slots) {
      if (this.#output.paused) break;
      if (slot.alive && slot.awaitingRef === 0 && this.#output.drain(slot)) found = true;
    }
    // Refill the rings before the results go out: the idle count they carry is then the true one.
    if (this.#input.waiting) {
      this.#pacer.sizeQueues();
      this.#input.dispatchBacklog();
    }
    const lingerMs = this.#sleeping || this.inFlight === 0 ? 0 : this.#pacer.resultLingerMs();
    this.#flushResults(lingerMs);
    this.#supervisor.watchIfDue(performance.now());
    this.#waits.settle();
    if (this.#output.paused) return;
    // Found nothing new: the workers are in long tasks, or out of work; their next commit wakes us.
    if (found && lingerMs > 0) this.#linger(lingerMs);
    else for (const slot of this.#slots) this.#arm(slot);
  };

  /**
   * Hands the results out, unless they may linger `lingerMs` for more: then the linger's timer is set
   * (asleep, or with nothing in flight, no more results are coming: what is held goes at once).
   */
  #flushResults(lingerMs: number): void {
    if (!this.#output.holdsResults) return;
    const now = performance.now();
    if (Number.isNaN(this.#resultsHeldSince)) this.#resultsHeldSince = now;
    const left = lingerMs > 0 ? this.#resultsHeldSince + lingerMs - now : 0;
    if (left > 0) {
      this.#linger(left);
      return;
    }
    this.#resultsHeldSince = Number.NaN;
    this.#output.flush();
  }

  /** Sets the linger's timer, unless it is set. */
  #linger(ms: number): void {
    if (this.#lingerTimer !== undefined) return;
    this.#pacer.lag.armed(ms);
    this.#lingerTimer = setTimeout(this.#endLinger, ms);
  }

  /** The linger is over: drain again, and hand out what is held (a timer may fire a little early). */
  readonly #endLinger = (): void => {
    this.#pacer.lag.fired();
    this.#lingerTimer = undefined;
    if (this.#stopped) return;
    // What this drain finds was committed during the linger: it goes out now, with what is held.
    this.#resultsHeldSince = Number.NEGATIVE_INFINITY;
    this.#drainAll();
  };

  /** Arms a wake-up for when the worker commits more output. */
  #arm(slot: WorkerSlot): void {
    if (slot.armed || !slot.alive || slot.awaitingRef !== 0 || this.#stopped) return;
    const wait = slot.output.waitForData(slot.outputPosition);
    if (wait === undefined) return this.#scheduleDrain();
    slot.armed = true;
    wait.then(() => {
      slot.armed = false;
      // While a linger runs, its timer drains: a wake-up armed before it began waits for that.
      if (this.#lingerTimer === undefined) this.#scheduleDrain();
    });
  }

  // ---- state and lifecycle ----------------------------------------------------------------------

  /** How often the engine looks at its workers' memory and progress, in ms (see WorkerSupervisor). */
  get watchEveryMs(): number {
    return this.#supervisor.watchEveryMs;
  }

  /** Worker threads that died or were ended and were replaced, since the start. */
  get workersReplaced(): number {
    return this.#supervisor.workersReplaced;
  }

  /** Root items finished since the start. */
  get itemsDone(): number {
    return this.#output.rootsFinished;
  }

  /** Items run again because their worker died on them, and items given up after `maxAttempts`. */
  get retries(): { retried: number; givenUp: number } {
    return { retried: this.#supervisor.itemsRetried, givenUp: this.#supervisor.itemsGivenUp };
  }

  /** Bytes in each worker's input and output ring now, and their sizes (for metrics). */
  ringFill(): Array<{ input: number; inputSize: number; output: number; outputSize: number }> {
    return this.#slots.map((slot) => ({
      input: slot.input.used,
      inputSize: slot.input.capacity,
      output: slot.output.used,
      outputSize: slot.output.capacity,
    }));
  }

  /** Items the workers have in progress now (known only of workers that run several at once). */
  get itemsRunning(): number {
    let running = 0;
    for (const slot of this.#slots) running += slot.running?.count ?? 0;
    return running;
  }

  /** Workers with a free place (nothing queued, at concurrency 1) and not asleep. */
  get idleWorkers(): number {
    let idle = 0;
    for (const slot of this.#slots) if (slot.alive && slot.queued < slot.concurrency && !slot.asleep) idle++;
    return idle;
  }

  /** Workers parked until their output ring has room: held by a paused or slow consumer. */
  get heldWorkers(): number {
    let held = 0;
    for (const slot of this.#slots) if (slot.alive && slot.output.producerWaiting) held++;
    return held;
  }

  /**
   * Whether items waited in the backlog (for room in a worker's queue) the whole time since the last
   * call: the root then keeps more in flight here than the workers need. Asked once per results frame.
   */
  standingBacklog(): boolean {
    return this.#input.standing();
  }

  /** Idle workers that nothing waits for: 0 while items wait in the backlog (what a root should see). */
  get hungryWorkers(): number {
    return this.#input.waiting ? 0 : this.idleWorkers;
  }

  /** Whether no item is anywhere in the engine and every result has been handed out. */
  get isEmpty(): boolean {
    return this.inFlight === 0 && !this.#input.waiting && !this.#output.holdsResults;
  }

  get isAsleep(): boolean {
    return this.#sleeping;
  }

  /** Resolves when some worker is idle and nothing waits for ring space. */
  whenIdle(): Promise<void> {
    return this.#when(() => !this.#input.waiting && this.idleWorkers > 0);
  }

  /**
   * Resolves once nothing waits for ring space. A feeder that awaits it before each `dispatch` keeps at
   * most one batch outside the rings: when the workers (or a slow consumer of the results, through
   * the full output rings) fall behind, the feeder waits instead of the backlog growing.
   */
  whenRoom(): Promise<void> {
    return this.#when(() => !this.#input.waiting);
  }

  /** Resolves when every accepted item is finished and every result handed out. */
  whenEmpty(): Promise<void> {
    return this.#when(() => this.isEmpty);
  }

  /** Workers finish their current item, then pause. Resolves once all are paused. */
  sleep(): Promise<void> {
    this.#sleeping = true;
    this.#flushResults(0);
    Atomics.store(this.#control, Control.Sleep, 1);
    for (const slot of this.#slots) slot.input.nudge();
    return this.whenAsleep();
  }

  /** Resolves once every worker has paused after a `sleep()` (at once when not asleep-bound). */
  whenAsleep(): Promise<void> {
    if (!this.#sleeping) return Promise.resolve();
    return this.#when(() => !this.#sleeping || this.#slots.every((slot) => !slot.alive || slot.asleep));
  }

  wakeup(): void {
    this.#sleeping = false;
    Atomics.store(this.#control, Control.Sleep, 0);
    Atomics.notify(this.#control, Control.Sleep);
  }

  /** Per task: processed, dropped, errors, total and mean milliseconds, summed over the workers. */
  stats(): TaskStats[] {
    return sumTaskStats(this.#statsView, this.#tasks, 0, this.workerCount);
  }

  /** The same counters for each worker on its own (index = worker). */
  statsByWorker(): TaskStats[][] {
    return this.#slots.map((slot) => sumTaskStats(this.#statsView, this.#tasks, slot.index, slot.index + 1));
  }

  /** Stops every worker and frees the rings. Pending waits reject; the engine cannot be used again. */
  async reset(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    clearTimeout(this.#lingerTimer);
    Atomics.store(this.#control, Control.Sleep, 0);
    Atomics.notify(this.#control, Control.Sleep);
    const stopped = this.#supervisor.stop();
    this.#waits.rejectAll(new StateError("the engine was reset"));
    this.#input.clear();
    this.#output.clear();
    await stopped;
  }

  #when(ready: () => boolean): Promise<void> {
    if (this.#stopped) return Promise.reject(new StateError("the engine was reset"));
    return this.#waits.until(ready);
  }
}
