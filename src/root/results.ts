import { decode } from "../protocol/codec.ts";
import { RecordKind, RecordReader, type TaskErrorReport, forEachDone } from "../protocol/record.ts";

/** Where the results of one node go, as the root's `ResultPump` hands them out. */
export interface ResultSink<Source> {
  /** An output of the last task. A returned promise holds every later result until it settles. */
  output(value: unknown): unknown;
  /** A task threw on an item (`failed`: the item was given up after its worker died too often). */
  taskError(source: Source, item: number, report: TaskErrorReport, failed: boolean): unknown;
  /** Items are finished on `source`, all their outputs handled before. */
  done(source: Source, ids: number[]): void;
  /** `bytes` of `source`'s results are handled: it may send that much more. */
  handled(source: Source, bytes: number): void;
}

/**
 * Longest the pump hands out results without giving the event loop a turn: a burst of frames must
 * not hold back timers, heartbeats and the sockets (it would look like a stalled root).
 */
const SLICE_MS = 8;
/** Records handled between looks at the clock. */
const RECORDS_PER_CLOCK_CHECK = 256;

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

interface PendingFrame<Source> {
  source: Source;
  blob: Uint8Array;
  reader: RecordReader;
  frameBytes: number;
}

/**
 * Hands results out strictly in the order they arrived, one at a time: an output handler that returns
 * a promise holds everything behind it. Frames wait here only while a handler is busy, and what waits
 * is bounded by the credit each node is given: `handled` gives credit back only as frames are done,
 * so a slow handler stops the nodes instead of filling the root's memory.
 */
export class ResultPump<Source> {
  readonly #sink: ResultSink<Source>;
  #queue: PendingFrame<Source>[] = [];
  #running = false;
  #idleWaiters: Array<() => void> = [];
  readonly #doneIds: number[] = [];
  /** When the pump last gave the event loop a turn (or began). */
  #sliceStart = 0;
  /** Called whenever the pump runs dry. */
  onIdle: () => void = () => {};

  constructor(sink: ResultSink<Source>) {
    this.#sink = sink;
  }

  /** Takes a results blob (the pump may keep it: frames are owned by their receiver). */
  push(source: Source, blob: Uint8Array, frameBytes: number): void {
    this.#queue.push({ source, blob, reader: new RecordReader(blob), frameBytes });
    if (!this.#running) void this.#run();
  }

  /** Whether nothing waits to be handed out. */
  get idle(): boolean {
    return !this.#running && this.#queue.length === 0;
  }

  /** Resolves once nothing waits to be handed out. */
  whenIdle(): Promise<void> {
    if (this.idle) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Ids of items whose Done from `source` arrived but is not handled yet (it waits behind a handler). */
  pendingDone(source: Source): number[] {
    const ids: number[] = [];
    for (const frame of this.#queue) {
      if (frame.source !== source) continue;
      const reader = new RecordReader(frame.blob);
      while (reader.next()) {
        if (reader.kind === RecordKind.Done)
          forEachDone(frame.blob, reader.payloadStart, reader.payloadEnd, (id) => ids.push(id));
      }
    }
    return ids;
  }

  /** Forgets everything waiting (on reset). */
  clear(): void {
    this.#queue = this.#running ? this.#queue.slice(0, 1) : [];
  }

  async #run(): Promise<void> {
    this.#running = true;
    this.#sliceStart = performance.now();
    try {
      while (this.#queue.length > 0) {
        if (performance.now() - this.#sliceStart > SLICE_MS) await this.#yieldTurn();
        const frame = this.#queue[0]!;
        const waiting = this.#handleFrame(frame);
        if (waiting !== undefined) await waiting;
        if (this.#queue[0] === frame) this.#queue.shift();
        this.#sink.handled(frame.source, frame.frameBytes);
      }
    } finally {
      this.#running = false;
      const waiters = this.#idleWaiters;
      this.#idleWaiters = [];
      for (const wake of waiters) wake();
      this.onIdle();
    }
  }

  /** Handles a frame's records; returns a promise only if a handler made it wait. */
  #handleFrame(frame: PendingFrame<Source>): Promise<void> | undefined {
    const { reader, blob, source } = frame;
    const sink = this.#sink;
    let sinceClockCheck = 0;
    while (reader.next()) {
      let pending: unknown;
      switch (reader.kind) {
        case RecordKind.Output: {
          let value: unknown;
          try {
            value = decode(blob, reader.payloadStart, reader.payloadEnd);
          } catch (error) {
            pending = sink.taskError(
              source,
              reader.id,
              { task: "(root)", message: `an output could not be decoded: ${(error as Error).message}` },
              false,
            );
            break;
          }
          pending = sink.output(value);
          break;
        }
        case RecordKind.TaskError:
        case RecordKind.Failed: {
          let report: TaskErrorReport;
          try {
            report = decode(blob, reader.payloadStart, reader.payloadEnd) as TaskErrorReport;
          } catch {
            report = { task: "?", message: "an error report could not be decoded" };
          }
          pending = sink.taskError(source, reader.id, report, reader.kind === RecordKind.Failed);
          break;
        }
        case RecordKind.Done: {
          const ids = this.#doneIds;
          ids.length = 0;
          forEachDone(blob, reader.payloadStart, reader.payloadEnd, (id) => ids.push(id));
          sink.done(source, ids);
          break;
        }
      }
      if (isThenable(pending)) return Promise.resolve(pending).then(() => this.#handleFrame(frame) ?? undefined);
      if (++sinceClockCheck === RECORDS_PER_CLOCK_CHECK) {
        sinceClockCheck = 0;
        if (performance.now() - this.#sliceStart > SLICE_MS)
          return this.#yieldTurn().then(() => this.#handleFrame(frame) ?? undefined);
      }
    }
    return undefined;
  }

  async #yieldTurn(): Promise<void> {
    await nextTurn();
    this.#sliceStart = performance.now();
  }
}

export function isThenable(value: unknown): value is PromiseLike<unknown> {
  return value !== null && typeof value === "object" && typeof (value as { then?: unknown }).then === "function";
}
