/**
 * A worker thread's loop: read an input record from the ring, decode it, run it through the taskchain
 * depth-first, encode each output into the output ring, then mark the item done. Only the engine
 * writes this worker's input ring and only this worker writes its output ring.
 *
 * The worker uses web-`Worker` messaging only (`self.onmessage` / `postMessage`), never
 * `worker_threads`: mixing the two in one Bun worker loses messages.
 */
import { setLogSink } from "../log/client.ts";
import type { LogLine } from "../protocol/messages.ts";
import { DoneList, RECORD_HEADER_BYTES, RecordKind, decode, encode, encodeDeclined, encodeTransient, writeRecordHeader } from "../protocol/codec.ts";
import { SMALL_OUTPUT_BYTES, SmallTarget, encodeSmallInto } from "../protocol/small-items.ts";
import { Hunger, SpillRotation } from "./hunger.ts";
import { ByteRing, WAKE_CHECK_MS } from "./ring.ts";
import { HEAP_REPORT_MS, HeapReporter } from "./worker-heap.ts";
import { ChainRunner, type ResolvedTask, STAT_FIELDS, busyMilliseconds, loadTaskchain, statsStride } from "./taskchain.ts";
import {
  Control,
  FLAG_SPILLED_BYTES,
  type FromWorker,
  SPILL_TARGET_SHIFT,
  type SetupMessage,
  type ToWorker,
  itemKey,
} from "./worker-messages.ts";

const port = globalThis as unknown as {
  onmessage: ((event: MessageEvent<ToWorker>) => void) | null;
  postMessage(message: FromWorker, transfer?: ArrayBuffer[]): void;
};
const post = (message: FromWorker, transfer?: ArrayBuffer[]) => port.postMessage(message, transfer);
const MAX_REPORT_CHARS = 16_000;
/** Uncommitted output bytes after which the writer commits on its own. */
const COMMIT_BYTES = 16 * 1024;
/** Items finished between commits (and input releases) while more input is waiting. */
const ITEMS_PER_COMMIT = 64;
/**
 * Task time between commits while more input is waiting: the engine learns of slow items promptly,
 * which is what it sizes each worker's queue by (see Engine's queue caps).
 */
const COMMIT_MS = 1;

/** Bytes of spilled inputs that arrived by message, and readers waiting for ones that have not. */
const spilledInputs = new Map<number, SharedArrayBuffer>();
const spilledWaiters = new Map<number, (bytes: SharedArrayBuffer) => void>();

port.onmessage = (event) => {
  const message = event.data;
  switch (message.type) {
    case "setup":
      void start(message);
      return;
    case "spilled-input": {
      const waiter = spilledWaiters.get(message.key);
      if (waiter === undefined) spilledInputs.set(message.key, message.bytes);
      else {
        spilledWaiters.delete(message.key);
        waiter(message.bytes);
      }
      return;
    }
    case "stop":
      process.exit(0);
  }
};

function spilledInput(key: number): SharedArrayBuffer | Promise<SharedArrayBuffer> {
  const bytes = spilledInputs.get(key);
  if (bytes !== undefined) return bytes;
  return new Promise((resolve) => spilledWaiters.set(key, resolve));
}

/**
 * Writes records to the output ring; waits (without blocking the thread) when it is full. Records are
 * committed in batches (`flush`, or every COMMIT_BYTES): each commit is a store the engine's thread
 * must see, and a wake-up when it sleeps, so one per record would cost more than the record.
 *
 * Finished items are collected into one Done record, written at every commit ahead of it: outputs of a
 * finished item are never visible without its Done, so a crash re-runs only items whose outputs the
 * engine never saw (and the one that was running).
 */
class OutputWriter {
  #position: number;
  #committed: number;
  #nextRef = 1;
  readonly #done = new DoneList(256);
  #doneFlags = 0;
  readonly #target: SmallTarget;

  constructor(readonly ring: ByteRing) {
    this.#position = ring.writePosition;
    this.#committed = this.#position;
    this.#target = new SmallTarget(ring.data);
  }

  /**
   * Writes `value` encoded: a small one straight into the ring when there is room for it in one piece
   * (no bytes of its own, no copy), anything else as `write` does. Throws what `encode` throws.
   */
  writeValue(kind: number, stage: number, flags: number, id: number, value: unknown): void | Promise<void> {
    const ring = this.ring;
    const position = this.#position;
    const room = Math.min(ring.roomAt(position), RECORD_HEADER_BYTES + ring.maxPayload);
    if (room > RECORD_HEADER_BYTES) {
      const offset = ring.offsetOf(position);
      const length = encodeSmallInto(value, this.#target, offset + RECORD_HEADER_BYTES, offset + room);
      if (length >= 0) {
        writeRecordHeader(ring.view, offset, kind, stage, flags, id, length);
        const next = (position + RECORD_HEADER_BYTES + length) >>> 0;
        this.#position = next;
        if (((next - this.#committed) >>> 0) >= COMMIT_BYTES) this.flush();
        return;
      }
    }
    // With room for any small item, the writer declined this one: msgpackr's, without a second try.
    const declined = room >= RECORD_HEADER_BYTES + SMALL_OUTPUT_BYTES;
    return this.write(kind, stage, flags, id, declined ? encodeDeclined(value) : encode(value));
  }

  write(kind: number, stage: number, flags: number, id: number, bytes: Uint8Array): void | Promise<void> {
    if (bytes.length > this.ring.maxPayload) return this.#writeSpilled(kind, stage, flags, id, bytes);
    const next = this.ring.tryWrite(this.#position, kind, stage, flags, id, bytes);
    if (next < 0) return this.#writeWhenRoom(kind, stage, flags, id, bytes);
    this.#position = next;
    if (((next - this.#committed) >>> 0) >= COMMIT_BYTES) this.flush();
  }

  /** Writes only if there is room right now, and commits at once (a spill should not wait). */
  tryWrite(kind: number, stage: number, flags: number, id: number, bytes: Uint8Array): boolean {
    if (bytes.length > this.ring.maxPayload) return false;
    const next = this.ring.tryWrite(this.#position, kind, stage, flags, id, bytes);
    if (next < 0) return false;
    this.#position = next;
    this.flush();
    return true;
  }

  /** Records that the item (`flags`, `id`) is finished, having given `outputs` outputs; it goes out with the next Done record. */
  finished(flags: number, id: number, outputs: number): void | Promise<void> {
    if (this.#done.count > 0 && flags !== this.#doneFlags) {
      const writing = this.#writeDone(true);
      if (writing !== undefined) return writing.then(() => this.finished(flags, id, outputs));
    }
    this.#doneFlags = flags;
    if (this.#done.add(id, outputs)) return this.#writeDone(true);
  }

  /** Makes everything written so far visible to the engine, with the Done of every finished item if it fits. */
  flush(): void {
    void this.#writeDone(false);
    if (this.#committed === this.#position) return;
    this.#committed = this.#position;
    this.ring.commit(this.#position);
  }

  /** Like `flush`, but waits for room for the Done record: afterwards every finished item is committed. */
  async settle(): Promise<void> {
    const writing = this.#writeDone(true);
    if (writing !== undefined) await writing;
    this.flush();
  }

  /** Writes the Done record; when there is no room, waits for it (`wait`) or leaves it for later. */
  #writeDone(wait: boolean): void | Promise<void> {
    const done = this.#done;
    if (done.count === 0) return;
    const last = done.lastId;
    if (!wait) {
      const next = this.ring.tryWrite(this.#position, RecordKind.Done, 0, this.#doneFlags, last, done.payload());
      if (next >= 0) {
        this.#position = next;
        done.count = 0;
      }
      return;
    }
    const payload = done.take().slice(); // the list refills while we wait
    return this.write(RecordKind.Done, 0, this.#doneFlags, last, payload);
  }

  async #writeWhenRoom(kind: number, stage: number, flags: number, id: number, bytes: Uint8Array): Promise<void> {
    for (;;) {
      if (this.ring.closed) process.exit(0);
      this.flush(); // the engine can only free room it can see
      const released = this.ring.readPosition;
      const next = this.ring.tryWrite(this.#position, kind, stage, flags, id, bytes);
      if (next >= 0) {
        this.#position = next;
        return;
      }
      await this.ring.waitForRoom(released);
    }
  }

  /** Too large for the ring: the bytes go by message, a 4-byte placeholder keeps their place in order. */
  #writeSpilled(kind: number, stage: number, flags: number, id: number, bytes: Uint8Array): void | Promise<void> {
    const ref = this.#nextRef++;
    const copy = new ArrayBuffer(bytes.length);
    new Uint8Array(copy).set(bytes);
    post({ type: "spilled-output", ref, bytes: copy }, [copy]);
    const placeholder = new Uint8Array(4);
    new DataView(placeholder.buffer).setUint32(0, ref, true);
    return this.write(kind, stage, flags | FLAG_SPILLED_BYTES, id, placeholder);
  }
}

async function start(setup: SetupMessage): Promise<void> {
  let tasks: ResolvedTask[];
  try {
    for (const [key, bytes] of setup.spilled) spilledInputs.set(key, bytes);
    setLogSink((lines: LogLine[]) => post({ type: "log", lines }));
    tasks = await loadTaskchain(setup.taskchain, setup.entries);
  } catch (error) {
    post({ type: "setup-error", message: (error as Error).message });
    return;
  }
  post({ type: "ready" });
  await runLoop(setup, tasks);
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

async function runLoop(setup: SetupMessage, tasks: ResolvedTask[]): Promise<void> {
  const input = new ByteRing(setup.input);
  const output = new OutputWriter(new ByteRing(setup.output));
  const control = new Int32Array(setup.control);
  const stats = new Float64Array(setup.stats, setup.index * statsStride(tasks.length) * 8, tasks.length * STAT_FIELDS);

  const hunger = new Hunger(control, setup.index, setup.workers);
  const sleepRequested = () => Atomics.load(control, Control.Sleep) === 1;
  const rotation = new SpillRotation(hunger);
  // The memory guard's view of this worker: reported between items, and by timer while a task awaits.
  const heap = new HeapReporter(setup.heap, setup.index);
  heap.report();
  setInterval(() => heap.report(), HEAP_REPORT_MS);

  // The item being run: every output, error and spill is labelled with it; its outputs are counted.
  let currentId = 0;
  let currentFlags = 0;
  let currentOutputs = 0;

  const runner = new ChainRunner(
    tasks,
    {
      emit(value) {
        try {
          const writing = output.writeValue(RecordKind.Output, 0, currentFlags, currentId, value);
          currentOutputs++;
          return writing;
        } catch (error) {
          const task = tasks[tasks.length - 1]!;
          return output.write(RecordKind.TaskError, tasks.length - 1, currentFlags, currentId, errorReport(task, new TypeError(`its output could not be encoded as MessagePack: ${(error as Error).message}`)));
        }
      },
      taskError(stage, error) {
        return output.write(RecordKind.TaskError, stage, currentFlags, currentId, errorReport(tasks[stage]!, error));
      },
      trySpill(item, stage) {
        const target = rotation.next();
        if (target < 0) return false;
        let bytes: Uint8Array;
        try {
          bytes = encodeTransient(item); // copied into the ring at once
        } catch {
          return false; // the local run reports it
        }
        const flags = currentFlags | ((target + 1) << SPILL_TARGET_SHIFT);
        // When the output ring is full the engine is behind anyway: run this one here.
        return output.tryWrite(RecordKind.Spill, stage, flags, currentId, bytes);
      },
    },
    stats,
  );

  let position = input.readPosition;
  let released = position;
  let sinceCommit = 0;
  let busyAtCommit = 0;
  const busy = () => busyMilliseconds(stats, 0, tasks.length);
  // Commits outputs and completions, then gives finished inputs' bytes back: completions are committed
  // before the inputs they finish are released, so a crash never loses one.
  const settle = async (): Promise<void> => {
    await output.settle();
    if (released !== position) input.release((released = position));
    sinceCommit = 0;
    busyAtCommit = busy();
  };
  for (;;) {
    if (sleepRequested()) {
      await settle();
      hunger.retract();
      await sleepWhileAsked(control);
    }
    if (input.closed) process.exit(0);
    const at = input.peek(position);
    if (at < 0) {
      await settle();
      hunger.announce();
      // Also woken by `sleep()`: the engine raises the control word, then nudges this ring.
      await input.waitForDataOr(position, sleepRequested);
      continue;
    }
    const offset = input.offsetOf(at);
    const view = input.view;
    if (view.getUint8(offset) === RecordKind.Void) {
      position = (at + input.recordSize(offset)) >>> 0;
      continue;
    }
    input.markRunning(at);
    const stage = view.getUint8(offset + 1);
    const flags = view.getUint16(offset + 2, true);
    const id = view.getUint32(offset + 4, true);
    const length = view.getUint32(offset + 8, true);
    const next = (at + RECORD_HEADER_BYTES + length) >>> 0;
    // Say we are hungry while still busy with our last item, so spilled work arrives before we idle.
    const more = input.peek(next) >= 0;
    if (more) hunger.retract();
    else hunger.announce();
    currentId = id;
    currentFlags = flags & ~FLAG_SPILLED_BYTES;
    currentOutputs = 0;

    let item: unknown;
    let decoded = true;
    try {
      if ((flags & FLAG_SPILLED_BYTES) === 0) {
        item = decode(input.data, offset + RECORD_HEADER_BYTES, offset + RECORD_HEADER_BYTES + length);
      } else {
        await settle();
        const key = itemKey(flags, id);
        const bytes = await spilledInput(key);
        spilledInputs.delete(key);
        item = decode(new Uint8Array(bytes));
      }
    } catch (error) {
      decoded = false;
      const task = tasks[Math.min(stage, tasks.length - 1)]!;
      const failure = output.write(RecordKind.TaskError, stage, currentFlags, id, errorReport(task, new TypeError(`the item could not be decoded: ${(error as Error).message}`)));
      if (failure !== undefined) await failure;
    }
    if (decoded && stage < tasks.length) {
      const running = runner.run(item, stage);
      if (running !== undefined) {
        await settle(); // a task that waits must not hold back what came before it
        await running;
      }
    }
    const finishing = output.finished(currentFlags, id, currentOutputs);
    if (finishing !== undefined) await finishing;
    position = next;
    heap.afterItem();
    if (!more || ++sinceCommit >= ITEMS_PER_COMMIT || busy() - busyAtCommit >= COMMIT_MS) await settle();
  }
}

async function sleepWhileAsked(control: Int32Array): Promise<void> {
  post({ type: "asleep" });
  while (Atomics.load(control, Control.Sleep) === 1) {
    const wait = Atomics.waitAsync(control, Control.Sleep, 1, WAKE_CHECK_MS);
    if (wait.async) await wait.value;
  }
  post({ type: "awake" });
}
