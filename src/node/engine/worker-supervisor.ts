import { RecordKind, recordFlags, recordKind, setRecordFlags, setRecordKind } from "../../protocol/record.ts";
import type { LogLine } from "../../protocol/messages.ts";
import type { BuiltInCombiner } from "../../protocol/combiners.ts";
import type { TaskSpec } from "../../protocol/pipeline.ts";
import type { ByteRing } from "../ring.ts";
import { statsStride } from "../task-stats.ts";
import { FLAG_ALONE, type FromWorker } from "../worker-messages.ts";
import { MemoryGuard, type WatchedWorker, defaultMemoryLimit } from "./memory-limit.ts";
import type { OutputDrain } from "./output-drain.ts";
import { type ProgressSample, StallGuard } from "./stall-guard.ts";
import { type WorkerSlot, keyAt } from "./worker-slot.ts";
import { WorkerHeaps, heapSlotsBytes } from "../worker-heap.ts";
import { endProcesses, startedByThread } from "../task-processes.ts";

export interface SupervisionOptions {
  /** Times an item may take its worker down before it is given up (default 3). */
  maxAttempts?: number;
  /**
   * Resident bytes of this process above which a worker is ended to save the rest (its item counts an
   * attempt, as a crash does); default 80% of the machine's or container's memory. `Infinity`: never.
   */
  memoryLimitBytes?: number;
  /**
   * A worker that has an item and gets nothing done for this long (no task call finishes, no output is
   * written) is ended, and its item counts an attempt, as a crash does (default: no limit).
   */
  taskTimeoutMs?: number;
}

/** What the supervisor tells the engine's owner. */
export interface WorkerEvents {
  /** A worker thread died; it has been replaced. */
  onWorkerDied?(worker: number, reason: string): void;
  /** Log lines from tasks (their `log()` calls), to forward to the log server. */
  onLog?(lines: LogLine[]): void;
}

/** What the supervisor asks of the engine. */
export interface SupervisedEngine {
  /** Something for the engine's pump: a worker started, paused, or sent an oversize output's bytes. */
  wake(): void;
  /** A worker is idle again (a wait for an idle worker may hold now). */
  settle(): void;
  /** Watches the slot's output ring again (its worker was replaced). */
  arm(slot: WorkerSlot): void;
}

/** What every worker is set up with. */
export interface WorkerSetup {
  tasks: TaskSpec[];
  entries: Record<string, string>;
  control: SharedArrayBuffer;
  stats: SharedArrayBuffer;
  /** Largest output a task may give, encoded. */
  maxItemBytes: number;
  /** Whether workers may hand parts of a large fan-out to idle workers. */
  shareFanOut: boolean;
  /** A combiner folding the outputs in the workers. */
  combine?: TaskSpec | BuiltInCombiner;
}

/** How often the engine looks at the process's memory and its workers' progress (see MemoryGuard, StallGuard). */
const WATCH_MS = 50;
/**
 * A drain of the engine's runs the watch once this much of its period has passed (`watchIfDue`), and
 * the timer starts its period over: on a busy node the watch rides on the drains' wake-ups (every
 * linger, at most 10 ms apart) instead of waking the thread twenty times a second on its own, and it
 * still looks at least every WATCH_MS.
 */
const WATCH_DUE_MS = 0.8 * WATCH_MS;
/**
 * How often it looks while no worker has an item: nothing can stall then, and memory moves only by a
 * task's own timers, if at all. An idle node then wakes once a second instead of twenty times; the
 * next feed brings back the short period (`busy()`).
 */
const IDLE_WATCH_MS = 1000;

/**
 * Starts the worker threads, and keeps them running: a worker that dies (or is ended for using too
 * much memory, or for getting nothing done past the task timeout) is replaced on the same rings. The
 * item it was running counts one attempt, and is given up after `maxAttempts`.
 */
export class WorkerSupervisor {
  /** Worker threads that died or were ended and were replaced, since the start. */
  workersReplaced = 0;
  /** Items run again because their worker died on them, and items given up after `maxAttempts` (for status and metrics). */
  itemsRetried = 0;
  itemsGivenUp = 0;
  readonly #slots: readonly WorkerSlot[];
  readonly #setup: WorkerSetup;
  readonly #drain: OutputDrain;
  readonly #events: WorkerEvents;
  readonly #engine: SupervisedEngine;
  readonly #stats: Float64Array;
  readonly #maxAttempts: number;
  readonly #memoryGuard: MemoryGuard | undefined;
  readonly #stallGuard: StallGuard | undefined;
  readonly #watched: WatchedWorker[] = [];
  /** Each worker's own heap, as it reports it (see worker-heap.ts). */
  readonly #heaps: WorkerHeaps;
  readonly #progress: ProgressSample[] = [];
  #watchTimer: ReturnType<typeof setInterval> | undefined;
  /** When the watch last looked (performance.now()). */
  #watchedAt = 0;
  /** When the watch next reads the process's resident bytes (see MemoryGuard.nextLookMs). */
  #residentDue = 0;
  /** The watch's period now: WATCH_MS or IDLE_WATCH_MS (0: no watch, for there is nothing to guard). */
  #watchEvery = 0;
  #stopped = false;

  constructor(
    slots: readonly WorkerSlot[],
    setup: WorkerSetup,
    options: SupervisionOptions,
    drain: OutputDrain,
    events: WorkerEvents,
    engine: SupervisedEngine,
  ) {
    this.#slots = slots;
    this.#setup = setup;
    this.#drain = drain;
    this.#events = events;
    this.#engine = engine;
    this.#stats = new Float64Array(setup.stats);
    this.#heaps = new WorkerHeaps(new SharedArrayBuffer(heapSlotsBytes(slots.length)));
    this.#maxAttempts = Math.max(1, options.maxAttempts ?? 3);
    const memoryLimit = options.memoryLimitBytes ?? defaultMemoryLimit();
    if (!(memoryLimit > 0)) {
      throw new RangeError(`memoryLimitBytes must be a positive number of bytes, got ${memoryLimit}`);
    }
    if (memoryLimit !== Number.POSITIVE_INFINITY) this.#memoryGuard = new MemoryGuard(memoryLimit);
    const timeout = options.taskTimeoutMs;
    if (timeout !== undefined && !(timeout > 0)) {
      throw new RangeError(`taskTimeoutMs must be a positive number of milliseconds, got ${timeout}`);
    }
    if (timeout !== undefined && timeout !== Number.POSITIVE_INFINITY) this.#stallGuard = new StallGuard(timeout);
  }

  /** Starts every worker; resolves with their distinct setup errors (none: all are ready). */
  async start(): Promise<string[]> {
    const outcomes = await Promise.all(this.#slots.map((slot) => this.#spawn(slot)));
    const errors = [...new Set(outcomes.filter((outcome): outcome is string => outcome !== undefined))];
    if (errors.length === 0 && (this.#memoryGuard !== undefined || this.#stallGuard !== undefined)) {
      this.#watchEach(WATCH_MS);
    }
    return errors;
  }

  /** How often the watch looks now, in ms: 50 while items are queued, 1000 while none is (0: no watch). */
  get watchEveryMs(): number {
    return this.#watchEvery;
  }

  /** Items came in: the watch looks every WATCH_MS again if it had slowed down for an idle node. */
  busy(): void {
    if (this.#watchEvery === IDLE_WATCH_MS && !this.#stopped) this.#watchEach(WATCH_MS);
  }

  /** Runs the watch now if it is due soon (see WATCH_DUE_MS); the engine calls this as it drains. */
  watchIfDue(now: number): void {
    if (this.#watchEvery !== WATCH_MS || now - this.#watchedAt < WATCH_DUE_MS) return;
    this.#watchTimer!.refresh();
    this.#watch();
  }

  #watchEach(ms: number): void {
    if (this.#watchEvery === ms) return;
    clearInterval(this.#watchTimer);
    this.#watchTimer = setInterval(this.#watch, ms);
    this.#watchTimer.unref();
    this.#watchEvery = ms;
  }

  /**
   * Ends every worker, and the processes their tasks started, and closes the rings; resolves once each
   * worker is gone (or after 2 s) and its processes too (see task-processes.ts).
   */
  stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#watchTimer);
    const closed = this.#slots.map((slot) => {
      slot.alive = false;
      slot.input.close();
      slot.output.close();
      const worker = slot.worker;
      if (worker === undefined) return Promise.resolve();
      const gone = new Promise<void>((resolve) => worker.addEventListener("close", () => resolve()));
      const ending = this.#terminate(slot);
      // Unref'd: once the worker is gone, the bound must not keep the process alive for the rest of it.
      return Promise.all([
        Promise.race([gone, new Promise<void>((resolve) => setTimeout(resolve, 2000).unref())]),
        ending,
      ]);
    });
    return Promise.all(closed).then(() => {});
  }

  /** Ends the slot's worker, and the processes its tasks started (resolves once they are gone too). */
  #terminate(slot: WorkerSlot): Promise<void> {
    const thread = this.#heaps.thread(slot.index);
    const started = thread === 0 ? [] : startedByThread(thread);
    slot.worker.terminate();
    return started.length === 0 ? Promise.resolve() : endProcesses(started);
  }

  /** Starts (or restarts) the slot's worker; resolves with its setup error, if any. */
  #spawn(slot: WorkerSlot): Promise<string | undefined> {
    const worker = new Worker(new URL("../worker/worker.ts", import.meta.url).href);
    slot.worker = worker;
    slot.lastError = undefined;
    this.#heaps.clear(slot.index);
    return new Promise((resolve) => {
      let settled = false;
      worker.onmessage = (event: MessageEvent<FromWorker>) => {
        const message = event.data;
        switch (message.type) {
          case "ready":
            slot.alive = true;
            settled = true;
            resolve(undefined);
            this.#engine.wake();
            return;
          case "setup-error":
            settled = true;
            resolve(message.message);
            return;
          case "oversize-output":
            slot.oversizeOutputs.set(message.ref, message.bytes);
            if (slot.awaitingRef === message.ref) {
              slot.awaitingRef = 0;
              this.#engine.wake();
            }
            return;
          case "asleep":
            slot.asleep = true;
            // Drain first: what the worker wrote before pausing belongs before `sleep()` resolves.
            this.#engine.wake();
            return;
          case "awake":
            slot.asleep = false;
            this.#engine.settle(); // an idle worker again: `whenIdle` may be waiting for it
            return;
          case "log":
            this.#events.onLog?.(message.lines);
            return;
        }
      };
      worker.addEventListener("error", (event) => {
        slot.lastError = (event as ErrorEvent).message || String((event as ErrorEvent).error);
      });
      worker.addEventListener("close", (event) => {
        if (!settled) {
          settled = true;
          resolve(slot.lastError ?? `worker exited with code ${(event as CloseEvent).code} during setup`);
          return;
        }
        if (worker === slot.worker) this.#onWorkerDied(slot, (event as CloseEvent).code);
      });
      worker.postMessage({
        type: "setup",
        index: slot.index,
        workers: this.#slots.length,
        taskchain: this.#setup.tasks,
        entries: this.#setup.entries,
        input: slot.input.buffer,
        output: slot.output.buffer,
        control: this.#setup.control,
        stats: this.#setup.stats,
        heap: this.#heaps.buffer,
        concurrency: slot.concurrency,
        running: slot.running?.buffer,
        maxItemBytes: this.#setup.maxItemBytes,
        shareFanOut: this.#setup.shareFanOut,
        combine: this.#setup.combine,
        oversize: [...slot.oversizeInputs],
      });
    });
  }

  /**
   * A worker died mid-run. Its finished work is drained; the item it was running counts one attempt
   * (and is given up after `maxAttempts`); items it had not started stay in its ring for the
   * replacement, which starts on the same rings.
   */
  #onWorkerDied(slot: WorkerSlot, code: number): void {
    if (this.#stopped || !slot.alive) return;
    slot.alive = false;
    slot.armed = false;
    const reason = slot.lastError ?? `worker exited with code ${code}`;
    this.workersReplaced++;
    this.#events.onWorkerDied?.(slot.index, reason);

    slot.awaitingRef = 0;
    this.#drain.drain(slot, true);
    slot.partial = undefined; // a partial without its Done: its items run again
    slot.oversizeOutputs.clear();

    // Items it finished whose Done it had not committed run again (at least once); the one it was
    // running when it died counts an attempt, and is given up after `maxAttempts`.
    const input = slot.input;
    let position = input.readPosition;
    if (slot.running === undefined) {
      position = this.#pastFinished(slot);
      const running = input.runningPosition;
      const unread = (input.writePosition - position) >>> 0;
      const started = (running - position) >>> 0 < unread && input.peek(running) === running;
      // What the items run again gave is void: a root handing out outputs exactly once drops it.
      if (started) this.#retractUpTo(input, position, running);
      if (started) this.#countAttempt(slot, running, reason);
    } else {
      // Several at once: every item not yet released may have given outputs without its Done (finished
      // and not committed, in progress, parked for a retry): what they gave is void — save those whose
      // Done came, though the worker died before it marked their input done: they are finished.
      this.#retractUpTo(input, position, -1, slot.doneKeys);
      // Each item that held a place counts an attempt (only the overdue ones when the task timeout
      // ended it). Items it finished and committed are Void already; finished ones not committed, and
      // parked ones, run again.
      const blamed = slot.overdue ?? slot.running.positions();
      slot.overdue = undefined;
      for (const at of blamed) {
        if (recordKind(input.view, input.offsetOf(at)) !== RecordKind.Void) this.#countAttempt(slot, at, reason);
      }
      slot.running.clear();
      slot.doneKeys.clear();
    }
    input.release(position);
    this.#drain.flush();
    this.#respawn(slot);
  }

  /** The item at `position` of the slot's input took its worker down: one more attempt, or given up. */
  #countAttempt(slot: WorkerSlot, position: number, reason: string): void {
    const input = slot.input;
    const offset = input.offsetOf(position);
    const key = keyAt(input, position);
    const attempts = (slot.attempts.get(key) ?? 0) + 1;
    if (attempts >= this.#maxAttempts) {
      slot.attempts.delete(key);
      this.itemsGivenUp++;
      this.#drain.giveUp(slot, offset, attempts, reason);
      setRecordKind(input.view, offset, RecordKind.Void);
    } else {
      slot.attempts.set(key, attempts);
      this.itemsRetried++;
      if (slot.running !== undefined) setRecordFlags(input.view, offset, recordFlags(input.view, offset) | FLAG_ALONE);
    }
  }

  /**
   * Above the memory limit, ends the worker most likely to blame (see MemoryGuard); past the task
   * timeout, ends a worker that got nothing done (see StallGuard). Each is replaced, and its item
   * counts an attempt.
   */
  readonly #watch = (): void => {
    this.#watchedAt = performance.now();
    const stride = statsStride(this.#setup.tasks.length);
    const stats = this.#stats;
    let queued = 0;
    for (const slot of this.#slots) {
      queued += slot.queued;
      const sample = (this.#progress[slot.index] ??= { busy: false, progress: 0 });
      // A sleeping worker is not stuck; nor is one whose outputs wait for a paused consumer: it is held;
      // nor one whose items all wait for a retry's backoff.
      const waitingForRetries = slot.running !== undefined && slot.running.count === 0;
      sample.busy = slot.alive && slot.queued > 0 && !slot.asleep && !this.#drain.paused && !waitingForRetries;
      sample.progress = slot.output.writePosition;
      for (let at = slot.index * stride, end = at + stride; at < end; at++) sample.progress += stats[at]!;
    }
    if (queued === 0) this.#watchEach(IDLE_WATCH_MS);
    const stalled = this.#stallGuard?.check(this.#progress) ?? -1;
    const stuckWhy = () =>
      `its task got nothing done for ${this.#stallGuard!.timeoutMs} ms, the task timeout (setup's taskTimeoutMs)`;
    if (stalled >= 0) return this.#end(this.#slots[stalled]!, stuckWhy());
    const overdue = this.#overdue();
    if (overdue !== undefined) return this.#end(overdue, stuckWhy());
    if (this.#memoryGuard === undefined || this.#watchedAt < this.#residentDue) return;
    const resident = process.memoryUsage.rss();
    if (resident > this.#memoryGuard.limitBytes) {
      // Measured only over the limit: a file read per worker.
      for (const slot of this.#slots) {
        const watched = (this.#watched[slot.index] ??= { heapBytes: 0 });
        watched.heapBytes = slot.alive ? this.#heaps.estimate(slot.index) : 0;
      }
    }
    const pick = this.#memoryGuard.check(this.#watched, resident);
    this.#residentDue = this.#watchedAt + this.#memoryGuard.nextLookMs(resident);
    if (pick < 0) return;
    const mb = (bytes: number) => Math.round(bytes / 1048576);
    const limit = mb(this.#memoryGuard.limitBytes);
    const heap = mb(this.#watched[pick]!.heapBytes);
    this.#end(
      this.#slots[pick]!,
      `the node's memory reached ${mb(resident)} MB, over its limit of ${limit} MB (pcluster node --memory-limit), ` +
        `and this worker's own heap held about ${heap} MB, the most of any worker`,
    );
  };

  /**
   * A worker running several items at once whose items progress while one of them is stuck: that one
   * holds its place past the task timeout. Returns the slot, its overdue items noted.
   */
  #overdue(): WorkerSlot | undefined {
    if (this.#stallGuard === undefined || this.#drain.paused) return undefined;
    const before = Date.now() - this.#stallGuard.timeoutMs;
    for (const slot of this.#slots) {
      if (slot.running === undefined || !slot.alive || slot.asleep) continue;
      const overdue = slot.running.overdue(before);
      if (overdue.length === 0) continue;
      slot.overdue = overdue;
      return slot;
    }
    return undefined;
  }

  /** Ends a worker for `reason`, and the processes its tasks started; its close replaces it (see `#onWorkerDied`). */
  #end(slot: WorkerSlot, reason: string): void {
    slot.lastError = reason;
    void this.#terminate(slot);
  }

  /**
   * Retracts the outputs of each input record from `from` to `last` (both included; -1: to the end): they
   * run again. Those whose item key is in `finished` (their Done came) are marked Void instead.
   */
  #retractUpTo(input: ByteRing, from: number, last: number, finished?: ReadonlySet<number>): void {
    for (let at = input.peek(from); at >= 0; at = input.peek(input.after(at))) {
      const offset = input.offsetOf(at);
      if (recordKind(input.view, offset) !== RecordKind.Void) {
        if (finished?.has(keyAt(input, at))) setRecordKind(input.view, offset, RecordKind.Void);
        else this.#drain.retract(input.view, offset);
      }
      if (at === last) return;
    }
  }

  /** Starts a replacement worker; retries after a pause while setting it up fails. */
  #respawn(slot: WorkerSlot): void {
    void this.#spawn(slot).then((error) => {
      if (this.#stopped) return;
      if (error === undefined) return this.#engine.arm(slot);
      this.#events.onWorkerDied?.(slot.index, `its replacement failed to start (retrying in 1 s): ${error}`);
      setTimeout(() => this.#stopped || this.#respawn(slot), 1000);
    });
  }

  /**
   * Where the dead worker's unfinished input starts. A worker runs its ring in order and gives bytes
   * back in batches, so the finished items form a prefix of what it had not released yet: everything up
   * to the record of its last Done.
   */
  #pastFinished(slot: WorkerSlot): number {
    const input = slot.input;
    const start = input.readPosition;
    let position = start;
    let past = start;
    for (let at = input.peek(position); at >= 0; at = input.peek(position)) {
      position = input.after(at);
      if (keyAt(input, at) === slot.lastDone) past = position;
    }
    return past;
  }
}
