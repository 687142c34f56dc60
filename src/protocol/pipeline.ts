import { BUILT_IN_COMBINERS, type BuiltInCombiner } from "./combiners.ts";
import { SetupError } from "../errors.ts";
import type { RecentError } from "../metrics/recent-errors.ts";
import {
  type Check,
  arrayOf,
  isAny,
  isBinary,
  isBoolean,
  isString,
  isUint,
  optional,
  shape,
  validate,
} from "./messages.ts";

/**
 * What a root sends to set a pipeline up on a node: the taskchain by package and export name, and the
 * task packages as files. Shared by the root (which builds it) and the node (which validates it).
 */

/** One task of a taskchain, as it travels. */
export interface TaskSpec {
  /** The shipped package (its `PackageBundle.name`) that exports the task. */
  package: string;
  /** The export: a function, or a class built once per worker with `args` and called via `process(item)`. */
  export: string;
  /** Whether the task returns many outputs (an array, any iterable or async iterable) instead of one. */
  isGenerator: boolean;
  /** Constructor arguments for a class task. */
  args?: unknown[];
  /** Items this task may have in progress at once on one worker (default: the setup's `concurrency`). */
  concurrency?: number;
  /** Runs a call that failed again, after a backoff (default: no retry). */
  retry?: RetryPolicy;
}

/** The most items one worker may have in progress at once (each holds a place in shared memory). */
export const MAX_CONCURRENCY = 10_000;

/** When and how often a task call that threw is run again (see `TaskSpec.retry`). */
export interface RetryPolicy {
  /** Calls in all, the first included: 3 runs an item at most twice more. */
  attempts: number;
  /** The wait before the first retry; each next one waits twice as long (plus up to half again, at random). */
  backoffMs: number;
  /** Retry only errors whose class name (`name`, or constructor's name) or `code` is listed (default: any error). */
  when?: string[];
}

/** One file of a shipped package, its path relative to the package folder (POSIX separators). */
export interface PackageFile {
  path: string;
  data: Uint8Array;
  /** File mode bits (only the executable bit is kept). */
  mode?: number;
}

/** A local package folder, as files. `name` is the folder the node writes it to. */
export interface PackageBundle {
  name: string;
  files: PackageFile[];
}

export interface SetupArgs {
  name: string;
  version: string;
  taskchain: TaskSpec[];
  packages: PackageBundle[];
  /** npm specs (`lodash@4`) installed into the pipeline's own folder on the node. */
  remotePackages: string[];
  /** Content hash of packages and remote packages: an unchanged pipeline is not written or installed again. */
  hash: string;
  /** Worker threads for this pipeline (default: the node's `--workers`). */
  workers?: number;
  /** Attempts for an item whose worker dies before it is given up (default 3). */
  maxAttempts?: number;
  /** Milliseconds a worker may go without finishing a task call or writing an output (default: no limit). */
  taskTimeoutMs?: number;
  /** Items one worker has in progress at once, for tasks without their own `concurrency` (default 1). */
  concurrency?: number;
  /** Result bytes the node may send ahead of the root's `credit` messages (default 8 MiB). */
  resultWindow?: number;
  /** The root's largest item or output, encoded; the node holds outputs to the smaller of it and its own. */
  maxItemBytes?: number;
  /**
   * Whether workers may hand parts of a large fan-out to idle workers (default true). A root that
   * hands out outputs exactly once turns it off: see `Retract` records in record.ts.
   */
  shareFanOut?: boolean;
  /**
   * Fold the outputs where they are made (see combiners.ts): a combiner class exported by a shipped
   * package, built once per worker with `args`, or a built-in by name. Outputs then reach the root only
   * as partials, each with the Done of the items it covers.
   */
  combine?: TaskSpec | BuiltInCombiner;
}

/** What a node answers to `setup`: what it runs on, and how much input it takes in flight. */
export interface SetupResult {
  workers: number;
  cores: number;
  /** Whether the same code was installed already (nothing was written). */
  cached: boolean;
  /** The most items and bytes the root may have in flight on this node. */
  window: { items: number; bytes: number };
  /** The node's own largest item or output (`--max-item`); absent from older nodes. */
  maxItemBytes?: number;
}

/** What a node answers to `status`. */
export interface NodeStatus {
  host: string;
  /** The address the node listens on, as it sees it. */
  listen: string;
  /** The node's process id on its host (absent from nodes before 0.2). */
  pid?: number;
  version: string;
  cores: number;
  /** Default worker threads per pipeline (`--workers`). */
  workers: number;
  /** True while the node finishes its items before it stops (SIGTERM; see `pcluster node --drain-timeout`). */
  stopping?: boolean;
  /** The node process's resident bytes now, and the limit above which it ends a runaway worker (`--memory-limit`). */
  memory: { used: number; limit: number };
  /** The pipeline set up now, if any. */
  pipeline: {
    name: string;
    version: string;
    /** The root that set it up (its client name). */
    owner: string;
    /** True when the asking connection is not its owner: the node is busy for it. */
    busy: boolean;
    startedAt: number;
    workers: number;
    idleWorkers: number;
    awake: boolean;
    inFlight: number;
    /** Worker threads that died or were ended (memory limit, task timeout) and were replaced. */
    workersReplaced: number;
    tasks: TaskStats[];
    /** Per worker thread (by index), its own counters of each task; absent from nodes before 0.2. */
    tasksByWorker?: TaskStats[][];
    /** Root items finished here since setup (for rates on the dashboard). */
    itemsDone?: number;
    /** The last task errors here, newest first (for the dashboard). */
    recentErrors?: RecentError[];
    /**
     * How late the node's socket thread runs its timers, in ms (followed: up fast, down slowly); above a
     * few, the node's cores are overloaded. Absent from nodes before it was reported.
     */
    lagMs?: number;
  } | null;
}

export interface TaskStats {
  task: string;
  processed: number;
  dropped: number;
  errors: number;
  totalMs: number;
  meanMs: number;
  /** Calls run again after a retryable failure; absent from nodes before retries existed. */
  retries?: number;
  /**
   * Timed calls per latency bucket (`LATENCY_BOUNDS_MS`, then one above them all), weighted as
   * `totalMs` is: an unbiased estimate for a task timed on a sample of its calls. A lazy generator's
   * call and each output it yields are timed one by one.
   */
  latency?: number[];
}

/** Counters and times travel as doubles (a memory limit may be Infinity); NaN is no figure. */
const isNumber: Check = (v) => (typeof v === "number" && !Number.isNaN(v) ? undefined : "a number");

const taskStatsRecord: Check = shape({
  task: isString,
  processed: isNumber,
  dropped: isNumber,
  errors: isNumber,
  totalMs: isNumber,
  meanMs: isNumber,
});

/** The parts of a status reply that `pcluster status` and `pcluster benchmark` read. */
const nodeStatus: Check = shape({
  host: isString,
  listen: isString,
  pid: optional(isUint),
  version: isString,
  cores: isUint,
  workers: isUint,
  memory: shape({ used: isNumber, limit: isNumber }),
  pipeline: optional(
    shape({
      name: isString,
      version: isString,
      owner: isString,
      busy: isBoolean,
      startedAt: isNumber,
      workers: isUint,
      idleWorkers: isUint,
      awake: isBoolean,
      inFlight: isUint,
      workersReplaced: isUint,
      tasks: arrayOf(taskStatsRecord, 255),
      tasksByWorker: optional(arrayOf(arrayOf(taskStatsRecord, 255), 65_536)),
      lagMs: optional(isNumber),
    }),
  ),
});

/** Validates a node's answer to `status`; throws a `ProtocolError` naming the field that does not fit. */
export function parseNodeStatus(reply: unknown): NodeStatus {
  return validate<NodeStatus>(reply, nodeStatus, 'answer to "status"');
}

const isBuiltInCombiner: Check = (v) =>
  (BUILT_IN_COMBINERS as readonly unknown[]).includes(v) ? undefined : `one of ${BUILT_IN_COMBINERS.join(", ")}`;

const taskSpec: Check = shape({
  package: isString,
  export: isString,
  isGenerator: isBoolean,
  args: optional(arrayOf(isAny, 1000)),
  concurrency: optional(isUint),
  retry: optional(shape({ attempts: isUint, backoffMs: isNumber, when: optional(arrayOf(isString, 1000)) })),
});

const packageBundle: Check = shape({
  name: isString,
  files: arrayOf(shape({ path: isString, data: isBinary, mode: optional(isUint) }), 100_000),
});

const setupArgs: Check = shape({
  name: isString,
  version: isString,
  taskchain: arrayOf(taskSpec, 255),
  packages: arrayOf(packageBundle, 1000),
  remotePackages: arrayOf(isString, 1000),
  hash: isString,
  workers: optional(isUint),
  maxAttempts: optional(isUint),
  taskTimeoutMs: optional(isUint),
  concurrency: optional(isUint),
  resultWindow: optional(isUint),
  maxItemBytes: optional(isUint),
  shareFanOut: optional(isBoolean),
  combine: optional((v) => (typeof v === "string" ? isBuiltInCombiner(v) : taskSpec(v))),
});

/** Validates setup arguments from the wire; throws a `ProtocolError` naming the bad field. */
export function parseSetupArgs(args: unknown): SetupArgs {
  const parsed = validate<SetupArgs>(args, setupArgs, 'command "setup"');
  if (parsed.taskchain.length === 0) {
    throw new SetupError("the taskchain is empty: give at least one task");
  }
  checkConcurrency(parsed.concurrency, "setup option concurrency");
  for (const [index, task] of parsed.taskchain.entries()) {
    const where = `task ${index + 1} ("${task.package}#${task.export}")`;
    checkConcurrency(task.concurrency, `${where}: concurrency`);
    const retry = task.retry;
    if (retry === undefined || retry === null) continue;
    if (retry.attempts === 0) throw new SetupError(`${where}: retry.attempts must be at least 1, got 0`);
    if (!(retry.backoffMs >= 0 && Number.isFinite(retry.backoffMs))) {
      const got = retry.backoffMs;
      throw new SetupError(`${where}: retry.backoffMs must be a finite number of milliseconds, at least 0, got ${got}`);
    }
  }
  return parsed;
}

function checkConcurrency(value: number | undefined, what: string): void {
  // Absent options may travel as null (MessagePack has no undefined).
  if (value !== undefined && value !== null && !(value >= 1 && value <= MAX_CONCURRENCY)) {
    throw new SetupError(`${what} must be from 1 to ${MAX_CONCURRENCY}, got ${value}`);
  }
}
