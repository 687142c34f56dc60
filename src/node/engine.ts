import { availableParallelism } from "node:os";
import { SetupError, StateError } from "../errors.ts";
import {
  DONE_ENTRY_BYTES,
  DoneList,
  FLAG_SUB_ITEM,
  RECORD_HEADER_BYTES,
  RecordBatchBuilder,
  RecordKind,
  type TaskErrorReport,
  decode,
  encode,
  readU32,
} from "../protocol/codec.ts";
import type { LogLine } from "../protocol/messages.ts";
import type { TaskSpec, TaskStatsRecord } from "../protocol/pipeline.ts";
import { ItemTracker } from "./item-tracker.ts";
import { InputDispatcher, countFeedRecords } from "./input-dispatch.ts";
import { MemoryGuard, type WatchedWorker, defaultMemoryLimit } from "./memory-limit.ts";
import { type ProgressSample, StallGuard } from "./stall-guard.ts";
import { ByteRing } from "./ring.ts";
import { busyMilliseconds, statsStride, sumTaskStats } from "./taskchain.ts";
import { type WorkerSlot, newWorkerSlot } from "./worker-slot.ts";
import { WorkerHeaps, heapSlotsBytes } from "./worker-heap.ts";
import {
  Control,
  FLAG_SPILLED_BYTES,
  type FromWorker,
  SPILL_TARGET_SHIFT,
  controlSlots,
  itemKey,
} from "./worker-messages.ts";

export interface EngineOptions {
  /** Worker threads (default: the number of cores). */
  workers?: number;
  /** Bytes of each worker's input ring (default 1 MiB). */
  inputRingBytes?: number;
  /** Bytes of each worker's output ring (default 1 MiB). */
  outputRingBytes?: number;
  /** Times an item may take its worker down before it is given up (default 3). */
  maxAttempts?: number;
  /** Result batches are handed out once they reach about this size (default 256 KiB). */
  resultBatchBytes?: number;
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

/** What the engine tells its owner. */
export interface EngineEvents {
  /**
   * Output, TaskError, Failed and Done records for root items, ready to frame (`finishFrame`) or to
   * take (`takeRecords`). Records left in the batch when this returns are dropped, so a reader that is
   * done by then may read them in place (`records()`).
   */
  onResults(batch: RecordBatchBuilder): void;
  /** A task threw, or an item was given up; the item's record is in the results too. */
  onTaskError?(report: TaskErrorReport & { item: number; stage: number; failed: boolean }): void;
  /** A worker thread died; it has been replaced. */
  onWorkerDied?(worker: number, reason: string): void;
  /** Log lines from tasks (their `log()` calls), to forward to the log server. */
  onLog?(lines: LogLine[]): void;
}

/** Per-task counters (see `Engine.stats`). */
export type TaskStats = TaskStatsRecord;

/**
 * Each worker's queue holds about this much of its measured work, at least MIN_QUEUE records; the
 * rest waits in the backlog for whichever worker gets free first. Long items thus never sit behind a
 * busy worker while another idles (CPU-bound work keeps every core busy to the end), and short items
 * still go in spans of hundreds.
 */
const QUEUE_MS = 4;
const MIN_QUEUE = 2;
/** The cap before anything was measured. */
const INITIAL_QUEUE = 16;
/** How often the engine looks at the process's memory and its workers' progress (see MemoryGuard, StallGuard). */
const WATCH_MS = 50;

/**
 * The node's engine: N worker threads running a taskchain, fed through SharedArrayBuffer rings.
 *
 * Its thread moves bytes and keeps counts; it never decodes an item. Input batches (`dispatch`) are
 * copied span by span into the least loaded workers' rings. Outputs, completions and errors are
 * drained from the output rings into result batches for the owner. When the owner pauses output (its
 * socket or its consumer is slow), the output rings fill, the workers wait, and input stops too: no
 * buffer grows without bound. A worker that dies is replaced on the same rings; the item it was running
 * is retried up to `maxAttempts` times, then reported as failed.
 */
export class Engine {
  readonly workerCount: number;
  readonly #tasks: TaskSpec[];
  readonly #entries: Record<string, string>;
  readonly #events: EngineEvents;
  readonly #maxAttempts: number;
  readonly #resultBatchBytes: number;
  readonly #control: Int32Array;
  readonly #controlBuffer: SharedArrayBuffer;
  readonly #statsBuffer: SharedArrayBuffer;
  readonly #statsView: Float64Array;
  readonly #slots: WorkerSlot[] = [];
  readonly #tracker = new ItemTracker();
  readonly #results = new RecordBatchBuilder(256 * 1024);
  /** Root items finished since the last Done record went into the results. */
  readonly #finished = new DoneList(1024);
  /** Copies input into the workers' rings; keeps what does not fit. */
  readonly #input: InputDispatcher;
  /** Root items accepted and not yet Done. */
  #inFlight = 0;
  /** Crashes per item key, for items whose worker died while running them. */
  readonly #attempts = new Map<number, number>();
  #outputPaused = false;
  #workersReplaced = 0;
  #drainScheduled = false;
  #stopped = false;
  #sleeping = false;
  #waiters: Array<{ ready: () => boolean; resolve: () => void; reject: (error: Error) => void }> = [];
  readonly #memoryGuard: MemoryGuard | undefined;
  readonly #stallGuard: StallGuard | undefined;
  readonly #watched: WatchedWorker[] = [];
  /** Each worker's own heap, as it reports it (see worker-heap.ts). */
  readonly #heaps: WorkerHeaps;
  readonly #progress: ProgressSample[] = [];
  #watchTimer: ReturnType<typeof setInterval> | undefined;

  private constructor(tasks: TaskSpec[], entries: Record<string, string>, options: EngineOptions, events: EngineEvents) {
    this.workerCount = Math.max(1, options.workers || availableParallelism());
    this.#tasks = tasks;
    this.#entries = entries;
    this.#events = events;
    this.#maxAttempts = Math.max(1, options.maxAttempts ?? 3);
    this.#resultBatchBytes = options.resultBatchBytes ?? 256 * 1024;
    const memoryLimit = options.memoryLimitBytes ?? defaultMemoryLimit();
    if (!(memoryLimit > 0)) throw new RangeError(`memoryLimitBytes must be a positive number of bytes, got ${memoryLimit}`);
    if (memoryLimit !== Number.POSITIVE_INFINITY) this.#memoryGuard = new MemoryGuard(memoryLimit);
    const timeout = options.taskTimeoutMs;
    if (timeout !== undefined && !(timeout > 0)) throw new RangeError(`taskTimeoutMs must be a positive number of milliseconds, got ${timeout}`);
    if (timeout !== undefined && timeout !== Number.POSITIVE_INFINITY) this.#stallGuard = new StallGuard(timeout);
    this.#controlBuffer = new SharedArrayBuffer(controlSlots(this.workerCount) * 4);
    this.#control = new Int32Array(this.#controlBuffer);
    this.#statsBuffer = new SharedArrayBuffer(this.workerCount * statsStride(tasks.length) * 8);
    this.#statsView = new Float64Array(this.#statsBuffer);
    this.#heaps = new WorkerHeaps(new SharedArrayBuffer(heapSlotsBytes(this.workerCount)));
    const inputBytes = options.inputRingBytes ?? 1 << 20;
    const outputBytes = options.outputRingBytes ?? 1 << 20;
    for (let index = 0; index < this.workerCount; index++) {
      const input = new ByteRing(ByteRing.allocate(inputBytes));
      const output = new ByteRing(ByteRing.allocate(outputBytes));
      this.#slots.push(newWorkerSlot(index, input, output, INITIAL_QUEUE));
    }
    this.#input = new InputDispatcher(this.#slots);
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
    const outcomes = await Promise.all(engine.#slots.map((slot) => engine.#spawn(slot)));
    const errors = [...new Set(outcomes.filter((outcome): outcome is string => outcome !== undefined))];
    if (errors.length > 0) {
      await engine.reset();
      throw new SetupError(errors.length === 1 ? errors[0]! : `workers failed to set up:\n${errors.join("\n")}`);
    }
    for (const slot of engine.#slots) engine.#arm(slot);
    if (engine.#memoryGuard !== undefined || engine.#stallGuard !== undefined) {
      engine.#watchTimer = setInterval(engine.#watch, WATCH_MS);
      engine.#watchTimer.unref();
    }
    return engine;
  }

  // ---- input ------------------------------------------------------------------------------------

  /**
   * Takes a batch of Input records (a root's feed blob) and copies them, unchanged, into the workers'
   * rings; what does not fit waits in the backlog, in order. Throws a `ProtocolError` (and takes none
   * of the batch) when a record is malformed, not an Input, or names a task past the chain's end.
   */
  dispatch(blob: Uint8Array): void {
    if (this.#stopped) throw new StateError("the engine was reset; set the pipeline up again");
    this.#inFlight += countFeedRecords(blob, this.#tasks.length);
    this.#input.dispatch(blob);
  }

  /** Root items accepted and not yet finished. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Bytes waiting for ring space. */
  get backlogBytes(): number {
    return this.#input.backlogBytes;
  }

  // ---- output -----------------------------------------------------------------------------------

  /** Stops handing out results; workers stop once their output rings are full. */
  pauseOutput(): void {
    this.#outputPaused = true;
  }

  resumeOutput(): void {
    if (!this.#outputPaused) return;
    this.#outputPaused = false;
    this.#scheduleDrain();
  }

  #scheduleDrain(): void {
    if (this.#drainScheduled || this.#stopped) return;
    this.#drainScheduled = true;
    // setImmediate, not a microtask: a stream of results must not starve the socket's own I/O.
    setImmediate(this.#drainAll);
  }

  readonly #drainAll = (): void => {
    this.#drainScheduled = false;
    if (this.#stopped) return;
    for (const slot of this.#slots) {
      if (this.#outputPaused) break;
      if (slot.alive && slot.awaitingRef === 0) this.#drainSlot(slot);
    }
    // Refill the rings before the results go out: the idle count they carry is then the true one.
    if (this.#input.waiting) {
      this.#sizeQueues();
      this.#input.dispatchBacklog();
    }
    this.#flushResults();
    this.#settleWaiters();
    if (!this.#outputPaused) for (const slot of this.#slots) this.#arm(slot);
  };

  /** Sets each worker's queue cap from its mean time per record so far. */
  #sizeQueues(): void {
    const stats = this.#statsView;
    const width = statsStride(this.#tasks.length);
    for (const slot of this.#slots) {
      if (slot.completed === 0) continue;
      const meanMs = busyMilliseconds(stats, slot.index * width, this.#tasks.length) / slot.completed;
      slot.queueCap = meanMs * MIN_QUEUE >= QUEUE_MS ? MIN_QUEUE : Math.ceil(QUEUE_MS / Math.max(meanMs, 1e-4));
    }
  }

  /** Arms a wake-up for when the worker commits more output. */
  #arm(slot: WorkerSlot): void {
    if (slot.armed || !slot.alive || slot.awaitingRef !== 0 || this.#stopped) return;
    const wait = slot.output.waitForData(slot.outputPosition);
    if (wait === undefined) return this.#scheduleDrain();
    slot.armed = true;
    wait.then(() => {
      slot.armed = false;
      this.#scheduleDrain();
    });
  }

  /**
   * Moves a worker's output records into the result batch. Plain records are copied in spans; records
   * of spilled sub-items get their root item's id first; Done and Spill records are handled here.
   */
  #drainSlot(slot: WorkerSlot, dying = false): void {
    const ring = slot.output;
    const view = ring.view;
    let position = slot.outputPosition;
    let spanOffset = -1;
    let spanEnd = 0;
    let spanCount = 0;
    const flushSpan = () => {
      if (spanCount > 0) this.#results.appendRecords(ring.data.subarray(spanOffset, spanEnd), spanCount);
      spanCount = 0;
      spanOffset = -1;
    };
    for (;;) {
      const at = ring.peek(position);
      if (at < 0) break;
      const offset = ring.offsetOf(at);
      const kind = view.getUint8(offset);
      const stage = view.getUint8(offset + 1);
      const flags = view.getUint16(offset + 2, true);
      const id = view.getUint32(offset + 4, true);
      const length = view.getUint32(offset + 8, true);
      const size = RECORD_HEADER_BYTES + length;
      if (spanCount > 0 && offset !== spanEnd) flushSpan();

      if (kind === RecordKind.Output || kind === RecordKind.TaskError) {
        if ((flags & FLAG_SPILLED_BYTES) !== 0) {
          flushSpan();
          const ref = view.getUint32(offset + RECORD_HEADER_BYTES, true);
          const bytes = slot.spilledOutputs.get(ref);
          if (bytes === undefined && !dying) {
            slot.awaitingRef = ref; // its message is on the way; drain on when it arrives
            break;
          }
          slot.spilledOutputs.delete(ref);
          if (bytes !== undefined) {
            this.#results.append(kind, stage, 0, this.#tracker.rootOf(flags, id), new Uint8Array(bytes));
          }
        } else {
          if ((flags & FLAG_SUB_ITEM) !== 0) {
            view.setUint32(offset + 4, this.#tracker.rootOf(flags, id), true);
            view.setUint16(offset + 2, 0, true);
          }
          if (spanCount === 0) spanOffset = offset;
          spanEnd = offset + size;
          spanCount++;
        }
        if (kind === RecordKind.TaskError) this.#reportTaskError(ring.data, offset, length, stage, flags, id);
      } else if (kind === RecordKind.Done) {
        flushSpan();
        const data = ring.data;
        for (let at = offset + RECORD_HEADER_BYTES, end = offset + size; at < end; at += DONE_ENTRY_BYTES) {
          this.#onDone(slot, flags, readU32(data, at), readU32(data, at + 4));
        }
      } else if (kind === RecordKind.Spill) {
        flushSpan();
        this.#onSpill(slot, stage, flags, id, ring.data.subarray(offset + RECORD_HEADER_BYTES, offset + size));
      }
      position = (at + size) >>> 0;
      if (this.#results.byteLength + (spanCount > 0 ? spanEnd - spanOffset : 0) >= this.#resultBatchBytes) {
        flushSpan();
        ring.release(position);
        slot.outputPosition = position;
        this.#flushResults();
        if (this.#outputPaused && !dying) return;
      }
    }
    flushSpan();
    ring.release(position);
    slot.outputPosition = position;
  }

  #reportTaskError(data: Uint8Array, offset: number, length: number, stage: number, flags: number, id: number): void {
    if (this.#events.onTaskError === undefined) return;
    let report: { task?: string; message?: string; stack?: string } = {};
    try {
      report = decode(data, offset + RECORD_HEADER_BYTES, offset + RECORD_HEADER_BYTES + length) as typeof report;
    } catch {
      // reported with what we have
    }
    this.#events.onTaskError({
      task: report.task ?? this.#tasks[stage]?.export ?? "?",
      message: report.message ?? "unknown error",
      stack: report.stack,
      item: this.#tracker.rootOf(flags, id),
      stage,
      failed: false,
    });
  }

  #onDone(slot: WorkerSlot, flags: number, id: number, outputs: number): void {
    slot.queued--;
    slot.completed++;
    const key = itemKey(flags, id);
    slot.lastDone = key;
    if (slot.spilledInputs.size > 0) slot.spilledInputs.delete(key);
    if (this.#attempts.size > 0) this.#attempts.delete(key);
    const root = this.#tracker.finish(flags, id, outputs);
    if (root >= 0) this.#finishRoot(root, this.#tracker.finishedOutputs);
  }

  #finishRoot(root: number, outputs: number): void {
    if (this.#finished.add(root, outputs)) this.#appendFinished();
    this.#inFlight--;
  }

  /** Appends the root items finished so far as one Done record (after their outputs). */
  #appendFinished(): void {
    if (this.#finished.count === 0) return;
    this.#results.append(RecordKind.Done, 0, 0, this.#finished.lastId, this.#finished.take());
  }

  /** A worker hands over a sub-item for the hungry worker it claimed (or, if that one is gone, the least loaded). */
  #onSpill(from: WorkerSlot, stage: number, flags: number, id: number, payload: Uint8Array): void {
    const subId = this.#tracker.spill(flags, id);
    let target: WorkerSlot | undefined = this.#slots[(flags >>> SPILL_TARGET_SHIFT) - 1];
    if (target === undefined || !target.alive) {
      target = undefined;
      for (const slot of this.#slots) {
        if (slot.alive && slot !== from && (target === undefined || slot.queued < target.queued)) target = slot;
      }
      target ??= from;
    }
    if (payload.length <= target.input.maxPayload) {
      const next = target.input.tryWrite(target.inputPosition, RecordKind.Input, stage, FLAG_SUB_ITEM, subId, payload);
      if (next >= 0) {
        target.inputPosition = next;
        target.queued++;
        target.input.commit(next);
        return;
      }
    }
    // No room right now: the sub-item waits in front of the backlog (finishing started items first).
    const record = new RecordBatchBuilder(RECORD_HEADER_BYTES + payload.length);
    record.append(RecordKind.Input, stage, FLAG_SUB_ITEM, subId, payload);
    this.#input.putFirst(record.takeRecords());
  }

  #flushResults(): void {
    this.#appendFinished();
    if (this.#results.count === 0) return;
    this.#events.onResults(this.#results);
    this.#results.clear();
  }

  // ---- workers ----------------------------------------------------------------------------------

  /** Starts (or restarts) the slot's worker; resolves with its setup error, if any. */
  #spawn(slot: WorkerSlot): Promise<string | undefined> {
    const worker = new Worker(new URL("./worker.ts", import.meta.url).href);
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
            this.#scheduleDrain();
            return;
          case "setup-error":
            settled = true;
            resolve(message.message);
            return;
          case "spilled-output":
            slot.spilledOutputs.set(message.ref, message.bytes);
            if (slot.awaitingRef === message.ref) {
              slot.awaitingRef = 0;
              this.#scheduleDrain();
            }
            return;
          case "asleep":
            slot.asleep = true;
            // Drain first: what the worker wrote before pausing belongs before `sleep()` resolves.
            this.#scheduleDrain();
            return;
          case "awake":
            slot.asleep = false;
            this.#settleWaiters(); // an idle worker again: `whenIdle` may be waiting for it
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
        workers: this.workerCount,
        taskchain: this.#tasks,
        entries: this.#entries,
        input: slot.input.buffer,
        output: slot.output.buffer,
        control: this.#controlBuffer,
        stats: this.#statsBuffer,
        heap: this.#heaps.buffer,
        spilled: [...slot.spilledInputs],
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
    this.#workersReplaced++;
    this.#events.onWorkerDied?.(slot.index, reason);

    slot.awaitingRef = 0;
    this.#drainSlot(slot, true);
    slot.spilledOutputs.clear();

    // Items it finished whose Done it had not committed run again (at least once); the one it was
    // running when it died counts an attempt, and is given up after `maxAttempts`.
    const input = slot.input;
    const position = this.#pastFinished(slot);
    const running = input.runningPosition;
    const unread = (input.writePosition - position) >>> 0;
    if (((running - position) >>> 0) < unread && input.peek(running) === running) {
      const offset = input.offsetOf(running);
      const key = this.#keyAt(input, running);
      const attempts = (this.#attempts.get(key) ?? 0) + 1;
      if (attempts >= this.#maxAttempts) {
        this.#attempts.delete(key);
        this.#giveUp(slot, input, offset, attempts, reason);
        input.view.setUint8(offset, RecordKind.Void);
      } else {
        this.#attempts.set(key, attempts);
      }
    }
    input.release(position);
    this.#flushResults();
    this.#respawn(slot);
  }

  /**
   * Above the memory limit, ends the worker most likely to blame (see MemoryGuard); past the task
   * timeout, ends a worker that got nothing done (see StallGuard). Each is replaced, and its item
   * counts an attempt.
   */
  readonly #watch = (): void => {
    const stride = statsStride(this.#tasks.length);
    const stats = this.#statsView;
    for (const slot of this.#slots) {
      const sample = (this.#progress[slot.index] ??= { busy: false, progress: 0 });
      // A sleeping worker is not stuck; nor is one whose outputs wait for a paused consumer: it is held.
      sample.busy = slot.alive && slot.queued > 0 && !slot.asleep && !this.#outputPaused;
      sample.progress = slot.output.writePosition;
      for (let at = slot.index * stride, end = at + stride; at < end; at++) sample.progress += stats[at]!;
    }
    const stalled = this.#stallGuard?.check(this.#progress) ?? -1;
    if (stalled >= 0) {
      const ms = this.#stallGuard!.timeoutMs;
      return this.#end(this.#slots[stalled]!, `its task got nothing done for ${ms} ms, the task timeout (setup's taskTimeoutMs)`);
    }
    if (this.#memoryGuard === undefined) return;
    const resident = process.memoryUsage.rss();
    if (resident > this.#memoryGuard.limitBytes) {
      // Measured only over the limit: a file read per worker.
      for (const slot of this.#slots) {
        const watched = (this.#watched[slot.index] ??= { heapBytes: 0 });
        watched.heapBytes = slot.alive ? this.#heaps.estimate(slot.index) : 0;
      }
    }
    const pick = this.#memoryGuard.check(this.#watched, resident);
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

  /** Ends a worker for `reason`; its close replaces it (see `#onWorkerDied`). */
  #end(slot: WorkerSlot, reason: string): void {
    slot.lastError = reason;
    slot.worker.terminate();
  }

  /** Starts a replacement worker; retries after a pause while setting it up fails. */
  #respawn(slot: WorkerSlot): void {
    void this.#spawn(slot).then((error) => {
      if (this.#stopped) return;
      if (error === undefined) return this.#arm(slot);
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
      position = (at + input.recordSize(input.offsetOf(at))) >>> 0;
      if (this.#keyAt(input, at) === slot.lastDone) past = position;
    }
    return past;
  }

  #keyAt(ring: ByteRing, position: number): number {
    const offset = ring.offsetOf(position);
    return itemKey(ring.view.getUint16(offset + 2, true), ring.view.getUint32(offset + 4, true));
  }

  /** Reports an item as failed after its attempts, and counts it done. */
  #giveUp(slot: WorkerSlot, input: ByteRing, offset: number, attempts: number, reason: string): void {
    const stage = input.view.getUint8(offset + 1);
    const flags = input.view.getUint16(offset + 2, true) & ~FLAG_SPILLED_BYTES;
    const id = input.view.getUint32(offset + 4, true);
    const root = this.#tracker.rootOf(flags, id);
    const message = `gave up after ${attempts} attempts, each of which took its worker down: ${reason}`;
    const task = this.#tasks[stage]?.export ?? "?";
    this.#results.append(RecordKind.Failed, stage, 0, root, encode({ task, message, attempts }));
    this.#events.onTaskError?.({ task, message, item: root, stage, failed: true, attempts });
    this.#onDone(slot, flags, id, 0); // no run of it finished (what its failed runs wrote was handed out)
  }

  // ---- state and lifecycle ----------------------------------------------------------------------

  /** Worker threads that died or were ended and were replaced, since the start. */
  get workersReplaced(): number {
    return this.#workersReplaced;
  }

  /** Workers with nothing queued and not asleep. */
  get idleWorkers(): number {
    let idle = 0;
    for (const slot of this.#slots) if (slot.alive && slot.queued === 0 && !slot.asleep) idle++;
    return idle;
  }

  /** Idle workers that nothing waits for: 0 while items wait in the backlog (what a root should see). */
  get hungryWorkers(): number {
    return this.#input.waiting ? 0 : this.idleWorkers;
  }

  /** Whether no item is anywhere in the engine and every result has been handed out. */
  get isEmpty(): boolean {
    return this.#inFlight === 0 && !this.#input.waiting && this.#results.count === 0 && this.#finished.count === 0;
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
    clearInterval(this.#watchTimer);
    Atomics.store(this.#control, Control.Sleep, 0);
    Atomics.notify(this.#control, Control.Sleep);
    const closed = this.#slots.map((slot) => {
      slot.alive = false;
      slot.input.close();
      slot.output.close();
      const worker = slot.worker;
      if (worker === undefined) return Promise.resolve();
      const gone = new Promise<void>((resolve) => worker.addEventListener("close", () => resolve()));
      worker.terminate();
      return Promise.race([gone, Bun.sleep(2000)]);
    });
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const waiter of waiters) waiter.reject(new StateError("the engine was reset"));
    this.#input.clear();
    this.#tracker.clear();
    await Promise.all(closed);
  }

  #when(ready: () => boolean): Promise<void> {
    if (this.#stopped) return Promise.reject(new StateError("the engine was reset"));
    if (ready()) return Promise.resolve();
    return new Promise((resolve, reject) => this.#waiters.push({ ready, resolve, reject }));
  }

  #settleWaiters(): void {
    if (this.#waiters.length === 0) return;
    this.#waiters = this.#waiters.filter((waiter) => {
      if (!waiter.ready()) return true;
      waiter.resolve();
      return false;
    });
  }
}
