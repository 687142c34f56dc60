/**
 * A worker thread's loop: read an input record from the ring, decode it, run it through the taskchain
 * depth-first, encode each output into the output ring, then mark the item done. Only the engine
 * writes this worker's input ring and only this worker writes its output ring.
 *
 * The worker uses web-`Worker` messaging only (`self.onmessage` / `postMessage`), never
 * `worker_threads`: mixing the two in one Bun worker loses messages.
 */
import { flushLogSink, logContext, setLogSink } from "../../log/log.ts";
import { decode, encode, encodeTransient } from "../../protocol/codec.ts";
import {
  RECORD_HEADER_BYTES,
  RecordKind,
  recordFlags,
  recordId,
  recordKind,
  recordLength,
  recordStage,
} from "../../protocol/record.ts";
import type { LogLine } from "../../protocol/messages.ts";
import { ByteRing, WAKE_CHECK_MS } from "../ring.ts";
import { busyMilliseconds, workerTaskStats } from "../task-stats.ts";
import {
  Control,
  FLAG_OVERSIZE,
  type FromWorker,
  SHARE_TARGET_SHIFT,
  type SetupMessage,
  type ToWorker,
  itemKey,
} from "../worker-messages.ts";
import { Hunger, ShareRotation } from "./fan-out-sharing.ts";
import { OutputWriter } from "./output-writer.ts";
import { ChainRunner, type ResolvedTask, loadTaskchain } from "./taskchain.ts";

const port = globalThis as unknown as {
  onmessage: ((event: MessageEvent<ToWorker>) => void) | null;
  postMessage(message: FromWorker, transfer?: ArrayBuffer[]): void;
};
const post = (message: FromWorker, transfer?: ArrayBuffer[]) => port.postMessage(message, transfer);
const MAX_REPORT_CHARS = 16_000;
/** Items finished between commits (and input releases) while more input is waiting. */
const ITEMS_PER_COMMIT = 64;
/**
 * Task time between commits while more input is waiting: the worker's linger. A commit wakes the
 * engine, so committing each slow item would cost a wake-up (and, further on, a result frame) per
 * item; this bound keeps it to one per few milliseconds of work, and the engine keeps each worker's
 * queue longer than this (see Engine's queue caps), so a worker never runs dry waiting for it. With no
 * more input waiting, the worker commits at once: a trickle's outputs never wait.
 */
const COMMIT_MS = 4;
/** What `ItemLoop`'s decode step returns for an item it could not decode (and reported). */
const UNDECODABLE = Symbol("undecodable");

/** Bytes of oversize inputs that arrived by message, and readers waiting for ones that have not. */
const oversizeInputs = new Map<number, SharedArrayBuffer>();
const oversizeWaiters = new Map<number, (bytes: SharedArrayBuffer) => void>();

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

function oversizeInput(key: number): SharedArrayBuffer | Promise<SharedArrayBuffer> {
  const bytes = oversizeInputs.get(key);
  if (bytes !== undefined) return bytes;
  return new Promise((resolve) => oversizeWaiters.set(key, resolve));
}

async function start(setup: SetupMessage): Promise<void> {
  let tasks: ResolvedTask[];
  try {
    for (const [key, bytes] of setup.oversize) oversizeInputs.set(key, bytes);
    setLogSink((lines: LogLine[]) => post({ type: "log", lines }));
    tasks = await loadTaskchain(setup.taskchain, setup.entries);
  } catch (error) {
    post({ type: "setup-error", message: (error as Error).message });
    return;
  }
  post({ type: "ready" });
  await new ItemLoop(setup, tasks).run();
}

function errorReport(task: ResolvedTask, error: unknown): Uint8Array {
  const message = error instanceof Error ? error.message : String(error);
  const stack = error instanceof Error ? error.stack : undefined;
  return encode({
    task: task.name,
    message: message.slice(0, MAX_REPORT_CHARS),
    stack: stack?.slice(0, MAX_REPORT_CHARS),
  });
}

/**
 * The worker's loop over its input ring, one item at a time in ring order. Each step returns a
 * promise only when it had to wait, so a run of small synchronous items costs no promise at all.
 */
class ItemLoop {
  readonly #tasks: ResolvedTask[];
  readonly #input: ByteRing;
  readonly #output: OutputWriter;
  readonly #control: Int32Array;
  readonly #stats: Float64Array;
  readonly #hunger: Hunger;
  readonly #rotation: ShareRotation;
  readonly #runner: ChainRunner;
  /** Where the next record is read, and up to where input bytes were given back to the engine. */
  #position: number;
  #released: number;
  #sinceCommit = 0;
  #busyAtCommit = 0;
  // The record being run: every output, error and share is labelled with its item; its outputs are counted.
  #offset = 0;
  #stage = 0;
  #flags = 0;
  #id = 0;
  #length = 0;
  #outputs = 0;
  #decodeError: unknown;

  constructor(setup: SetupMessage, tasks: ResolvedTask[]) {
    this.#tasks = tasks;
    this.#input = new ByteRing(setup.input);
    this.#output = new OutputWriter(new ByteRing(setup.output), post);
    this.#control = new Int32Array(setup.control);
    this.#stats = workerTaskStats(setup.stats, setup.index, tasks.length);
    this.#hunger = new Hunger(this.#control, setup.index, setup.workers);
    this.#rotation = new ShareRotation(this.#hunger);
    this.#runner = new ChainRunner(
      tasks,
      {
        emit: (value) => this.#emit(value),
        taskError: (stage, error) => this.#writeError(stage, errorReport(tasks[stage]!, error)),
        tryShare: (item, stage) => this.#tryShare(item, stage),
      },
      this.#stats,
      logContext(),
    );
    this.#position = this.#input.readPosition;
    this.#released = this.#position;
  }

  async run(): Promise<void> {
    const input = this.#input;
    for (;;) {
      if (this.#sleepRequested()) await this.#sleep();
      if (input.closed) process.exit(0);
      const at = input.peek(this.#position);
      if (at < 0) {
        await this.#waitForInput();
        continue;
      }
      const next = this.#begin(at);
      if (next < 0) continue; // a Void record, skipped
      // Say we are hungry while still busy with our last item, so shared work arrives before we idle.
      const more = input.peek(next) >= 0;
      if (more) this.#hunger.retract();
      else this.#hunger.announce();

      const item = (this.#flags & FLAG_OVERSIZE) === 0 ? this.#decode() : await this.#decodeOversize();
      if (item === UNDECODABLE) {
        const failure = this.#reportUndecodable();
        if (failure !== undefined) await failure;
      } else if (this.#stage < this.#tasks.length) {
        const running = this.#runner.run(item, this.#stage);
        if (running !== undefined) {
          await this.#settle(); // a task that waits must not hold back what came before it
          await running;
        }
      }
      // The item's log lines leave before its Done: a root that resets once all is done (and so ends
      // this worker) would otherwise lose the lines still waiting for this thread's next turn.
      flushLogSink();
      const finishing = this.#output.finished(this.#flags, this.#id, this.#outputs);
      if (finishing !== undefined) await finishing;
      this.#position = next;
      if (!more || ++this.#sinceCommit >= ITEMS_PER_COMMIT || this.#busy() - this.#busyAtCommit >= COMMIT_MS) {
        await this.#settle();
      }
    }
  }

  /**
   * Takes the record at `at` as the one being run; returns where the next one starts, or -1 (and moves
   * past it) for a Void record, an input given up after crashing its workers.
   */
  #begin(at: number): number {
    const input = this.#input;
    const offset = input.offsetOf(at);
    const view = input.view;
    if (recordKind(view, offset) === RecordKind.Void) {
      this.#position = (at + input.recordSize(offset)) >>> 0;
      return -1;
    }
    input.markRunning(at);
    this.#offset = offset;
    this.#stage = recordStage(view, offset);
    this.#flags = recordFlags(view, offset);
    this.#id = recordId(view, offset);
    this.#length = recordLength(view, offset);
    this.#outputs = 0;
    return (at + RECORD_HEADER_BYTES + this.#length) >>> 0;
  }

  /** The item, decoded where it lies in the ring; UNDECODABLE (see `#decodeError`) when it cannot be. */
  #decode(): unknown {
    const start = this.#offset + RECORD_HEADER_BYTES;
    try {
      return decode(this.#input.data, start, start + this.#length);
    } catch (error) {
      this.#decodeError = error;
      return UNDECODABLE;
    }
  }

  /** An oversize item: its bytes came (or are coming) by message. */
  async #decodeOversize(): Promise<unknown> {
    try {
      await this.#settle();
      const key = itemKey(this.#flags, this.#id);
      const bytes = await oversizeInput(key);
      oversizeInputs.delete(key);
      return decode(new Uint8Array(bytes));
    } catch (error) {
      this.#decodeError = error;
      return UNDECODABLE;
    }
  }

  /** Reports the item that could not be decoded as a task error of the task it was to start at. */
  #reportUndecodable(): void | Promise<void> {
    const task = this.#tasks[Math.min(this.#stage, this.#tasks.length - 1)]!;
    const why = new TypeError(`the item could not be decoded: ${(this.#decodeError as Error).message}`);
    return this.#output.write(RecordKind.TaskError, this.#stage, this.#itemFlags(), this.#id, errorReport(task, why));
  }

  /** The flags every record about the running item carries: its own, less how its input travelled. */
  #itemFlags(): number {
    return this.#flags & ~FLAG_OVERSIZE;
  }

  #emit(value: unknown): void | Promise<void> {
    const flags = this.#itemFlags();
    try {
      const writing = this.#output.writeValue(RecordKind.Output, 0, flags, this.#id, value);
      this.#outputs++;
      return writing;
    } catch (error) {
      const last = this.#tasks.length - 1;
      const why = new TypeError(`its output could not be encoded as MessagePack: ${(error as Error).message}`);
      return this.#writeError(last, errorReport(this.#tasks[last]!, why));
    }
  }

  #writeError(stage: number, report: Uint8Array): void | Promise<void> {
    return this.#output.write(RecordKind.TaskError, stage, this.#itemFlags(), this.#id, report);
  }

  /** Hands a fan-out sub-item to a hungry worker this one claimed; false: run it here. */
  #tryShare(item: unknown, stage: number): boolean {
    const target = this.#rotation.next();
    if (target < 0) return false;
    let bytes: Uint8Array;
    try {
      bytes = encodeTransient(item); // copied into the ring at once
    } catch {
      return false; // the local run reports it
    }
    const flags = this.#itemFlags() | ((target + 1) << SHARE_TARGET_SHIFT);
    // When the output ring is full the engine is behind anyway: run this one here.
    return this.#output.tryWrite(RecordKind.Share, stage, flags, this.#id, bytes);
  }

  #busy(): number {
    return busyMilliseconds(this.#stats, 0, this.#tasks.length);
  }

  /**
   * Commits outputs and completions, then gives finished inputs' bytes back: completions are committed
   * before the inputs they finish are released, so a crash never loses one.
   */
  async #settle(): Promise<void> {
    await this.#output.settle();
    if (this.#released !== this.#position) this.#input.release((this.#released = this.#position));
    this.#sinceCommit = 0;
    this.#busyAtCommit = this.#busy();
  }

  /** Nothing to read: commits, says this worker is hungry, and waits for input (or for `sleep()`). */
  async #waitForInput(): Promise<void> {
    await this.#settle();
    this.#hunger.announce();
    // Also woken by `sleep()`: the engine raises the control word, then nudges this ring.
    await this.#input.waitForDataOr(this.#position, this.#sleepRequested);
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
