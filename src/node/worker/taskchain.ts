import { SetupError } from "../../errors.ts";
import { latencyBucket } from "../../protocol/latency.ts";
import type { RetryPolicy, TaskSpec } from "../../protocol/pipeline.ts";
import { DROPPED, ERRORS, LATENCY, MILLISECONDS, PROCESSED, RETRIES, STAT_FIELDS } from "../task-stats.ts";
import { isRetryable, retryDelayMs } from "./retry.ts";

/** A task ready to call: a function, or the `process` method of a class instance built for this worker. */
export interface ResolvedTask {
  name: string;
  isGenerator: boolean;
  call: (item: unknown) => unknown;
  /** Items this task may have in progress at once on this worker (set by the worker from the setup). */
  concurrency?: number;
  retry?: RetryPolicy;
}

function isClass(value: Function): boolean {
  return /^class[\s{]/.test(Function.prototype.toString.call(value)) || typeof value.prototype?.process === "function";
}

/**
 * Imports each task's package and resolves its export. Classes are constructed here, once per worker,
 * with the task's `args`. Any export that is missing or of the wrong kind fails the whole setup with a
 * message naming the task, the package and what it does export.
 */
export async function loadTaskchain(specs: TaskSpec[], entries: Record<string, string>): Promise<ResolvedTask[]> {
  const modules = new Map<string, Record<string, unknown>>();
  const tasks: ResolvedTask[] = [];
  for (const [index, spec] of specs.entries()) {
    const where = `task ${index + 1} ("${spec.package}#${spec.export}")`;
    tasks.push(resolve(await importExport(spec, entries, where, modules), spec, where));
  }
  return tasks;
}

/**
 * Imports a shipped package (once per `modules`) and returns its export `spec.export`, a function or a
 * class; a `SetupError` starting with `where` says what is missing.
 */
export async function importExport(
  spec: { package: string; export: string },
  entries: Record<string, string>,
  where: string,
  modules = new Map<string, Record<string, unknown>>(),
): Promise<Function> {
  const entry = entries[spec.package];
  if (entry === undefined)
    throw new SetupError(`${where}: package "${spec.package}" was not shipped with the pipeline`);
  let module = modules.get(spec.package);
  if (module === undefined) {
    try {
      module = (await import(entry)) as Record<string, unknown>;
    } catch (error) {
      throw new SetupError(`${where}: importing package "${spec.package}" failed: ${(error as Error).message}`);
    }
    modules.set(spec.package, module);
  }
  const value = module[spec.export];
  if (value === undefined) {
    const names = Object.keys(module).filter((name) => typeof module[name] === "function");
    throw new SetupError(
      `${where}: package "${spec.package}" has no export "${spec.export}" (its function and class exports: ${names.join(", ") || "none"})`,
    );
  }
  if (typeof value !== "function") {
    throw new SetupError(`${where}: export "${spec.export}" is a ${typeof value}, not a function or class`);
  }
  return value;
}

function resolve(value: Function, spec: TaskSpec, where: string): ResolvedTask {
  const { concurrency, retry } = spec; // absent ones may have travelled as null
  const task = {
    name: spec.export,
    isGenerator: spec.isGenerator,
    concurrency: concurrency ?? undefined,
    retry: retry ?? undefined,
  };
  if (!isClass(value)) return { ...task, call: value as (item: unknown) => unknown };
  let instance: { process?: unknown };
  try {
    instance = new (value as new (...args: unknown[]) => { process?: unknown })(...(spec.args ?? []));
  } catch (error) {
    throw new SetupError(`${where}: constructing class "${spec.export}" failed: ${(error as Error).message}`);
  }
  if (typeof instance.process !== "function") {
    throw new SetupError(`${where}: class "${spec.export}" has no process(item) method to call for each item`);
  }
  const process = instance.process as (item: unknown) => unknown;
  return { ...task, call: (item) => process.call(instance, item) };
}

/** A task whose calls take this long or longer is timed on every call (the clock then costs < 0.5%). */
const TIME_EVERY_CALL_MS = 0.02;
/** A faster task is timed on one call in this many (at random), each standing for this many. */
const SAMPLE_ONE_IN = 16;
/** Every task's first calls are all timed, to learn how long they take. */
const TIME_FIRST_CALLS = 64;
/**
 * A generator's outputs from this one on may go to an idle worker. A sub-item handed over costs an
 * encode, a copy through the engine and a decode; a small fan-out (a 2-way split) runs at home, where
 * that would cost more than it spares, and the other workers have input of their own to run meanwhile.
 */
const SHARE_FROM = 32;

export interface ChainHooks {
  /** An item came out of the last task. Returns a promise when the caller must wait (output full). */
  emit(output: unknown): void | Promise<void>;
  /** A task threw (or its generator did): that item is dropped. */
  taskError(stage: number, error: unknown): void | Promise<void>;
  /** Offers a sub-item that would run from `stage` to an idle worker; true if it was taken. */
  tryShare(item: unknown, stage: number): boolean;
  /** An async task call of the item finished (for the task timeout of one item among several). */
  progressed(): void;
  /** The item waits for a retry's backoff: it gives up its place among the items in progress meanwhile. */
  park(): void;
  /** The backoff is over: resolves once the item has a place among the items in progress again. */
  resume(): void | Promise<void>;
}

type Step = void | Promise<void>;

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return value !== null && typeof value === "object" && typeof (value as { then?: unknown }).then === "function";
}

/**
 * Runs items through a taskchain depth-first: every descendant of an item is finished before the next
 * sibling is pulled from a generator, so memory stays bounded by the chain's depth, not its fan-out.
 *
 * Sync tasks run without a single Promise: `run` returns undefined when everything finished
 * synchronously, and a Promise only from the first task (or output write) that had to wait.
 *
 * Several items may run at once (the worker's `concurrency`): each run carries its own hooks, which
 * know its item. A task whose own `concurrency` is below the worker's is gated: a call beyond its
 * limit waits for one of its calls to settle (see `#gates`).
 */
export class ChainRunner {
  readonly #tasks: ResolvedTask[];
  readonly #stats: Float64Array;
  /** Per task: how many calls each timed call stands for (1: every call is timed; see `#clock`). */
  readonly #weights: Float64Array;
  /** Per task: a moving average of its timed calls' milliseconds, and how many were timed. */
  readonly #recentMs: Float64Array;
  readonly #timed: Float64Array;
  /** Names the task whose code runs now, for `log` calls inside it (see LogContext). */
  readonly #context: { task: string | undefined };
  /** Per task: its gate when its concurrency is below the worker's, else undefined (no cost). */
  readonly #gates: Array<TaskGate | undefined>;

  constructor(
    tasks: ResolvedTask[],
    stats: Float64Array,
    context: { task: string | undefined } = { task: undefined },
    workerConcurrency = 1,
  ) {
    this.#context = context;
    this.#tasks = tasks;
    this.#stats = stats;
    this.#weights = new Float64Array(tasks.length).fill(1);
    this.#recentMs = new Float64Array(tasks.length);
    this.#timed = new Float64Array(tasks.length);
    this.#gates = tasks.map((task) =>
      (task.concurrency ?? workerConcurrency) < workerConcurrency ? new TaskGate(task.concurrency!) : undefined,
    );
  }

  /** Runs `item` from task `stage` to the end of the chain; `attempt` counts the calls of task `stage`. */
  run(item: unknown, stage: number, hooks: ChainHooks, attempt = 1): Step {
    const tasks = this.#tasks;
    while (stage < tasks.length) {
      const task = tasks[stage]!;
      const gate = this.#gates[stage];
      if (gate !== undefined) return this.#gated(gate, item, stage, hooks, attempt);
      const started = this.#clock(stage);
      let result: unknown;
      this.#context.task = task.name;
      try {
        result = task.call(item);
      } catch (error) {
        return this.#failed(stage, started, error, item, hooks, attempt);
      }
      if (isThenable(result)) return this.#settle(result, stage, started, item, hooks, attempt);
      this.#count(stage, started, result, task.isGenerator);
      if (task.isGenerator) return this.#fanOut(result, stage, hooks);
      if (result === null || result === undefined) return;
      item = result;
      stage++;
      attempt = 1;
    }
    return hooks.emit(item);
  }

  /** A call of a gated task: waits for room under its limit, holds it until the call settles. */
  async #gated(gate: TaskGate, item: unknown, stage: number, hooks: ChainHooks, attempt: number): Promise<void> {
    const entering = gate.enter();
    if (entering !== undefined) {
      await entering;
      hooks.progressed(); // its wait for the gate is not its call's time: the task timeout starts now
    }
    const task = this.#tasks[stage]!;
    const started = this.#clock(stage);
    let result: unknown;
    this.#context.task = task.name;
    try {
      result = await task.call(item);
    } catch (error) {
      gate.leave();
      return this.#failed(stage, started, error, item, hooks, attempt);
    }
    gate.leave();
    hooks.progressed();
    this.#count(stage, started, result, task.isGenerator);
    if (task.isGenerator) return this.#fanOut(result, stage, hooks);
    if (result !== null && result !== undefined) return this.run(result, stage + 1, hooks);
  }

  /**
   * The time now if this call of task `stage` is to be timed, else -1. Reading the clock costs ~70 ns
   * here, as much as a whole small task: a task whose calls take under TIME_EVERY_CALL_MS is timed on
   * one call in SAMPLE_ONE_IN, picked at random, and that call's time counts for SAMPLE_ONE_IN calls —
   * its total (and mean) time is an unbiased estimate. A slower task is timed on every call.
   */
  #clock(stage: number): number {
    const weight = this.#weights[stage]!;
    return weight === 1 || Math.random() * weight < 1 ? performance.now() : -1;
  }

  /** Adds a timed call's milliseconds (weighted) to the task's total, and decides how to time the next ones. */
  #addTime(stage: number, started: number): void {
    if (started < 0) return;
    const ms = performance.now() - started;
    const weight = this.#weights[stage]!;
    this.#stats[stage * STAT_FIELDS + MILLISECONDS]! += ms * weight;
    this.#stats[stage * STAT_FIELDS + LATENCY + latencyBucket(ms)]! += weight; // the histogram, weighted alike
    const recent = (this.#recentMs[stage] = this.#recentMs[stage]! * 0.875 + ms * 0.125);
    const timed = ++this.#timed[stage]!;
    this.#weights[stage] =
      ms >= TIME_EVERY_CALL_MS || recent >= TIME_EVERY_CALL_MS || timed < TIME_FIRST_CALLS ? 1 : SAMPLE_ONE_IN;
  }

  async #settle(
    pending: PromiseLike<unknown>,
    stage: number,
    started: number,
    item: unknown,
    hooks: ChainHooks,
    attempt: number,
  ): Promise<void> {
    let result: unknown;
    try {
      result = await pending;
    } catch (error) {
      return this.#failed(stage, started, error, item, hooks, attempt);
    }
    hooks.progressed();
    const task = this.#tasks[stage]!;
    this.#count(stage, started, result, task.isGenerator);
    if (task.isGenerator) return this.#fanOut(result, stage, hooks);
    if (result !== null && result !== undefined) return this.run(result, stage + 1, hooks);
  }

  #count(stage: number, started: number, result: unknown, isGenerator: boolean): void {
    const stats = this.#stats;
    const at = stage * STAT_FIELDS;
    stats[at + PROCESSED]!++;
    this.#addTime(stage, started);
    if (!isGenerator && (result === null || result === undefined)) stats[at + DROPPED]!++;
  }

  /**
   * A call threw: the item is run again at this task when the task's retry policy allows it (the
   * call is counted as a retry, not an error), else it is dropped and reported.
   */
  #failed(stage: number, started: number, error: unknown, item: unknown, hooks: ChainHooks, attempt: number): Step {
    this.#addTime(stage, started);
    const retry = this.#tasks[stage]!.retry;
    if (retry != null && attempt < retry.attempts && isRetryable(error, retry)) {
      this.#stats[stage * STAT_FIELDS + RETRIES]!++;
      return this.#retry(item, stage, hooks, attempt, retryDelayMs(retry, attempt));
    }
    this.#stats[stage * STAT_FIELDS + ERRORS]!++;
    if (retry != null && attempt > 1 && error instanceof Error) {
      try {
        error.message = `${error.message} (after ${attempt} attempts)`;
      } catch {
        // a read-only message (a DOMException's): reported as it is
      }
    }
    return hooks.taskError(stage, error);
  }

  /** Waits out the backoff parked (the worker runs other items meanwhile), then calls the task again. */
  async #retry(item: unknown, stage: number, hooks: ChainHooks, attempt: number, delayMs: number): Promise<void> {
    hooks.park();
    await Bun.sleep(delayMs);
    const resuming = hooks.resume();
    if (resuming !== undefined) await resuming;
    return this.run(item, stage, hooks, attempt + 1);
  }

  /**
   * Runs output number `index` of a generator task: here, or on an idle worker once the fan-out is
   * large enough to be worth the trip (see SHARE_FROM).
   */
  #child(value: unknown, next: number, index: number, hooks: ChainHooks): Step {
    if (index >= SHARE_FROM && next < this.#tasks.length && hooks.tryShare(value, next)) return;
    return this.run(value, next, hooks);
  }

  #fanOut(result: unknown, stage: number, hooks: ChainHooks): Step {
    if (result === null || result === undefined) return;
    const next = stage + 1;
    if (Array.isArray(result)) return this.#fanOutArray(result, 0, next, hooks);
    if (typeof result === "object" || typeof result === "function") {
      if (typeof (result as Iterable<unknown>)[Symbol.iterator] === "function") {
        return this.#fanOutIterator((result as Iterable<unknown>)[Symbol.iterator](), stage, hooks);
      }
      if (typeof (result as AsyncIterable<unknown>)[Symbol.asyncIterator] === "function") {
        return this.#fanOutAsync((result as AsyncIterable<unknown>)[Symbol.asyncIterator](), stage, hooks);
      }
    }
    const task = this.#tasks[stage]!;
    return hooks.taskError(
      stage,
      new TypeError(
        `task "${task.name}" is marked isGenerator but returned ${typeof result === "string" ? "a string" : typeof result}; ` +
          "return an array, an iterable, a generator or an async iterable",
      ),
    );
  }

  #fanOutArray(values: unknown[], from: number, next: number, hooks: ChainHooks): Step {
    for (let i = from; i < values.length; i++) {
      const step = this.#child(values[i], next, i, hooks);
      if (step !== undefined) return step.then(() => this.#fanOutArray(values, i + 1, next, hooks));
    }
  }

  /**
   * A lazy iterator (e.g. a generator): time spent producing each value counts as the task's time. A
   * generator that throws midway is not retried: the outputs it gave are out already.
   */
  #fanOutIterator(iterator: Iterator<unknown>, stage: number, hooks: ChainHooks, from = 0): Step {
    for (let index = from; ; index++) {
      const started = this.#clock(stage);
      let step: IteratorResult<unknown>;
      this.#context.task = this.#tasks[stage]!.name; // the generator's body runs again
      try {
        step = iterator.next();
      } catch (error) {
        return this.#failedMidway(stage, started, error, hooks);
      }
      this.#addTime(stage, started);
      if (step.done) return;
      const pending = this.#child(step.value, stage + 1, index, hooks);
      if (pending !== undefined) return pending.then(() => this.#fanOutIterator(iterator, stage, hooks, index + 1));
    }
  }

  async #fanOutAsync(iterator: AsyncIterator<unknown>, stage: number, hooks: ChainHooks): Promise<void> {
    for (let index = 0; ; index++) {
      const started = this.#clock(stage);
      let step: IteratorResult<unknown>;
      this.#context.task = this.#tasks[stage]!.name;
      try {
        step = await iterator.next();
      } catch (error) {
        return this.#failedMidway(stage, started, error, hooks);
      }
      hooks.progressed();
      this.#addTime(stage, started);
      if (step.done) return;
      await this.#child(step.value, stage + 1, index, hooks);
    }
  }

  #failedMidway(stage: number, started: number, error: unknown, hooks: ChainHooks): Step {
    this.#stats[stage * STAT_FIELDS + ERRORS]!++;
    this.#addTime(stage, started);
    return hooks.taskError(stage, error);
  }
}

/**
 * At most `limit` calls of one task in progress at once on a worker, for a task whose own
 * `concurrency` is below the worker's; calls beyond it wait in order.
 */
class TaskGate {
  #inside = 0;
  readonly #waiting: Array<() => void> = [];

  constructor(readonly limit: number) {}

  enter(): void | Promise<void> {
    if (this.#inside < this.limit) {
      this.#inside++;
      return;
    }
    return new Promise((resolve) => this.#waiting.push(resolve));
  }

  /** The call settled: its place goes to the next waiting call, if any. */
  leave(): void {
    const next = this.#waiting.shift();
    if (next === undefined) this.#inside--;
    else next();
  }
}
