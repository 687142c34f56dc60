import type { KeptBuffers } from "../protocol/kept-buffers.ts";
import { decode } from "../protocol/codec.ts";
import { RecordKind, RecordReader, type TaskErrorReport, forEachDone } from "../protocol/record.ts";
import { DoneIds } from "./done-ids.ts";
import { type Held, HeldError, HeldOutputs } from "./held-outputs.ts";

/** Where the results of one node go, as the root's `ResultPump` hands them out. */
export interface ResultSink<Source> {
  /**
   * An output of the last task, `bytes` long encoded. A returned promise holds every later result until
   * it settles.
   */
  output(value: unknown, bytes: number): unknown;
  /** A task threw on an item (`failed`: the item was given up after its worker died too often). */
  taskError(source: Source, item: number, report: TaskErrorReport, failed: boolean): unknown;
  /** A combiner's partial (its bytes at `bytes[start, end)`), covering the items of the Done just reported. */
  partial(source: Source, bytes: Uint8Array, start: number, end: number): unknown;
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
  /** Exactly-once: whether the pump's DoneIds hold this frame's (its outputs of those go straight out). */
  doneRead?: boolean;
  /** Not a frame: the node is lost, and what it left held is dropped here, after its last frame. */
  lost?: boolean;
}

/** Default bound on outputs held at the root (see SetupOptions.maxHeldBytes). */
export const DEFAULT_MAX_HELD_BYTES = 64 * 1024 * 1024;
const NO_BYTES = new Uint8Array(0);

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
  /** The Done ids of the frame being handed out (one frame at a time, so one of these serves them all). */
  readonly #frameDone = new DoneIds();
  /** When the pump last gave the event loop a turn (or began). */
  #sliceStart = 0;
  /** Called whenever the pump runs dry. */
  onIdle: () => void = () => {};
  /**
   * Exactly-once delivery: an item's outputs are handed out only once its Done arrived from the node
   * that ran it (at once when they come in the same frame, the common case; else held until then).
   */
  #exactlyOnce = false;
  #held: HeldOutputs<Source>;
  /** Held outputs released by a Done, still to hand out (`undefined`: the item went past the bound). */
  #released: Array<[id: number, held: Held | undefined]> = [];
  #releasedAt = 0;
  /** The Done ids to report once `#released` is handed out. */
  #doneAfterRelease: number[] | undefined;

  /**
   * `memory`: where results messages of megabytes are joined (see NodeClient.connect): a frame's memory
   * is let go once the frame is handled, and what it holds for items' Done once that is handed out.
   */
  constructor(
    sink: ResultSink<Source>,
    readonly memory?: KeptBuffers,
  ) {
    this.#sink = sink;
    this.#held = new HeldOutputs<Source>(DEFAULT_MAX_HELD_BYTES, memory);
  }

  /** How outputs are handed out from now on (at setup; what is held is dropped). */
  configure(exactlyOnce: boolean, maxHeldBytes = DEFAULT_MAX_HELD_BYTES): void {
    this.#exactlyOnce = exactlyOnce;
    this.#held.clear();
    this.#held = new HeldOutputs<Source>(maxHeldBytes, this.memory);
  }

  /** Output bytes held for items not done yet (exactly-once). */
  get heldBytes(): number {
    return this.#held.bytes;
  }

  /**
   * `source` is lost: after its frames already here are handled, the outputs it left held (items not
   * done, which are sent again) are dropped.
   */
  endOf(source: Source): void {
    this.#queue.push({ source, blob: NO_BYTES, reader: new RecordReader(NO_BYTES), frameBytes: 0, lost: true });
    if (!this.#running) void this.#run();
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
    this.#held.clear();
    this.#released = [];
    this.#releasedAt = 0;
    this.#doneAfterRelease = undefined;
  }

  async #run(): Promise<void> {
    this.#running = true;
    this.#sliceStart = performance.now();
    try {
      while (this.#queue.length > 0) {
        if (performance.now() - this.#sliceStart > SLICE_MS) await this.#yieldTurn();
        const frame = this.#queue[0]!;
        if (frame.lost) {
          this.#held.dropSource(frame.source);
          this.#queue.shift();
          continue;
        }
        const waiting = this.#handleFrame(frame);
        if (waiting !== undefined) await waiting;
        if (this.#queue[0] === frame) this.#queue.shift();
        this.memory?.release(frame.blob); // what it holds for items' Done holds its memory on
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
    const exactlyOnce = this.#exactlyOnce;
    if (exactlyOnce && frame.doneRead !== true) {
      this.#frameDone.fill(blob);
      frame.doneRead = true;
    }
    let sinceClockCheck = 0;
    for (;;) {
      let pending: unknown;
      if (this.#released.length > 0) {
        pending = this.#handOutReleased(source);
        if (pending !== undefined) return (pending as Promise<void>).then(() => this.#handleFrame(frame));
      }
      if (!reader.next()) break;
      switch (reader.kind) {
        case RecordKind.Output: {
          const id = reader.id;
          if (exactlyOnce && this.#mustHold(source, id)) {
            this.#held.hold(source, id, blob.subarray(reader.payloadStart, reader.payloadEnd));
            break;
          }
          pending = this.#output(source, id, blob, reader.payloadStart, reader.payloadEnd);
          break;
        }
        case RecordKind.TaskError: {
          const id = reader.id;
          if (exactlyOnce && this.#mustHold(source, id)) {
            this.#held.hold(source, id, blob.subarray(reader.payloadStart, reader.payloadEnd), true);
            break;
          }
          pending = this.#taskError(source, id, blob, reader.payloadStart, reader.payloadEnd, false);
          break;
        }
        case RecordKind.Failed: // the item is given up: no run follows that could report it again
          pending = this.#taskError(source, reader.id, blob, reader.payloadStart, reader.payloadEnd, true);
          break;
        case RecordKind.Done: {
          const ids = this.#doneIds;
          ids.length = 0;
          forEachDone(blob, reader.payloadStart, reader.payloadEnd, (id) => ids.push(id));
          if (exactlyOnce && this.#release(source, ids)) this.#doneAfterRelease = ids.slice();
          else sink.done(source, ids);
          break;
        }
        case RecordKind.Retract:
          if (exactlyOnce) this.#held.retract(source, reader.id);
          break;
        case RecordKind.Partial:
          pending = sink.partial(source, blob, reader.payloadStart, reader.payloadEnd);
          break;
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

  /** Hands an output out (an undecodable one is reported as a task error of its item). */
  #output(source: Source, id: number, bytes: Uint8Array, start: number, end: number): unknown {
    let value: unknown;
    try {
      value = decode(bytes, start, end);
    } catch (error) {
      const message = `an output could not be decoded: ${(error as Error).message}`;
      return this.#sink.taskError(source, id, { task: "(root)", message }, false);
    }
    return this.#sink.output(value, end - start);
  }

  /**
   * Exactly-once: whether what item `id` gave in this frame waits for its Done — the frame does not
   * carry it, or earlier outputs of the item wait already (they go out first, in order).
   */
  #mustHold(source: Source, id: number): boolean {
    return !this.#frameDone.has(id) || this.#held.holds(source, id);
  }

  /** Hands a task error's report out (one that cannot be decoded is reported as such). */
  #taskError(source: Source, id: number, bytes: Uint8Array, start: number, end: number, failed: boolean): unknown {
    let report: TaskErrorReport;
    try {
      report = decode(bytes, start, end) as TaskErrorReport;
    } catch {
      report = { task: "?", message: "an error report could not be decoded" };
    }
    return this.#sink.taskError(source, id, report, failed);
  }

  /** Items `ids` are done on `source`: queues what they held; true if anything was. */
  #release(source: Source, ids: number[]): boolean {
    for (const id of ids) {
      const outputs = this.#held.release(source, id);
      if (outputs === "overflowed") this.#released.push([id, undefined]);
      else if (outputs !== undefined) for (const held of outputs) this.#released.push([id, held]);
    }
    return this.#released.length > 0;
  }

  /** Hands out the released outputs, then reports their Done; returns a promise if a handler made it wait. */
  #handOutReleased(source: Source): Promise<void> | undefined {
    const released = this.#released;
    while (this.#releasedAt < released.length) {
      const [id, held] = released[this.#releasedAt++]!;
      const pending =
        held === undefined
          ? this.#sink.taskError(source, id, { task: "(root)", message: this.#overflowMessage() }, false)
          : held instanceof HeldError
            ? this.#taskError(source, id, held.bytes, 0, held.bytes.length, false)
            : this.#output(source, id, held, 0, held.length);
      if (held !== undefined) this.#held.handedOut(held); // decoded: its bytes are read no more
      if (isThenable(pending)) return Promise.resolve(pending).then(() => this.#handOutReleased(source));
    }
    this.#released = [];
    this.#releasedAt = 0;
    const ids = this.#doneAfterRelease;
    this.#doneAfterRelease = undefined;
    if (ids !== undefined) this.#sink.done(source, ids);
    return undefined;
  }

  #overflowMessage(): string {
    return (
      `its outputs went past the ${this.#held.maxBytes} bytes the root may hold for items not done yet ` +
      '(setup option maxHeldBytes) and were dropped; raise it, or use delivery: "at-least-once" to stream them'
    );
  }

  async #yieldTurn(): Promise<void> {
    await nextTurn();
    this.#sliceStart = performance.now();
  }
}

export function isThenable(value: unknown): value is PromiseLike<unknown> {
  return value !== null && typeof value === "object" && typeof (value as { then?: unknown }).then === "function";
}
