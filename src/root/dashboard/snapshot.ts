import type { RecentError } from "../../metrics/recent-errors.ts";
import { latencyQuantile } from "../../protocol/latency.ts";
import type { NodeStatus } from "../../protocol/pipeline.ts";
import { mergeTaskStats } from "../inspect.ts";
import type { RootObservation } from "../observation.ts";

/** One look at the cluster: each node's status (or why there is none), and the root's view if there is one. */
export interface Look {
  nodes: Array<{ address: string; status?: NodeStatus; error?: string; roundTripMs?: number }>;
  root?: RootObservation;
}

export interface NodeView {
  address: string;
  /** Why the node could not be asked (then only `address` means anything). */
  error?: string;
  pipeline: string | null;
  workers: number;
  busy: number;
  replaced: number;
  memoryUsed: number;
  memoryLimit: number;
  itemsPerSecond: number | null;
  roundTripMs: number | null;
  inFlight: number;
  /** Items the root lets the node have in flight (root mode only). */
  window: number | null;
  /** How late the node's socket thread runs (its status's `lagMs`; null from an older node or none). */
  lagMs: number | null;
  /** The node finishes its items before it stops (SIGTERM): it gets no more. */
  stopping: boolean;
}

export interface TaskView {
  stage: number;
  task: string;
  processed: number;
  dropped: number;
  errors: number;
  meanMs: number;
  p99Ms: number;
  perSecond: number | null;
}

export interface ProgressView {
  /** Items finished (root mode: by the root's count; nodes mode: summed over the nodes). */
  done: number;
  /** Items fed so far (root mode only): the total `done` goes to while nothing more is fed. */
  fed: number | null;
  queued: number | null;
  inFlight: number;
  outputs: number | null;
  errors: number;
  resent: number | null;
  ratePerSecond: number | null;
  /** Seconds until what was fed so far is done, at the current rate (null: no rate yet). */
  etaSeconds: number | null;
}

export interface DashboardSnapshot {
  time: number;
  /** "root": served by a Root (its own counts); "nodes": `pcluster dashboard`, from the nodes alone. */
  mode: "root" | "nodes";
  pipeline: string | null;
  nodes: NodeView[];
  tasks: TaskView[];
  progress: ProgressView;
  errors: RecentError[];
  /** Something went wrong taking this look (shown as a banner). */
  problem?: string;
}

/** Rates are measured over about this many milliseconds of looks: one batch more or less does not jump. */
const RATE_SPAN_MS = 5000;
const ERRORS_SHOWN = 20;

/** Per-second rates of counters, over the last RATE_SPAN_MS of samples. */
class Rates {
  readonly #history = new Map<string, Array<{ time: number; value: number }>>();

  /** The rate of counter `key` now at `value`; null until there are two samples (or after a reset). */
  rate(key: string, time: number, value: number): number | null {
    let samples = this.#history.get(key);
    if (samples === undefined) this.#history.set(key, (samples = []));
    // A counter that went down was reset (a new setup): its old samples say nothing about the new run.
    if (samples.length > 0 && value < samples[samples.length - 1]!.value) samples.length = 0;
    samples.push({ time, value });
    while (samples.length > 2 && time - samples[1]!.time >= RATE_SPAN_MS) samples.shift();
    const first = samples[0]!;
    return time > first.time ? ((value - first.value) * 1000) / (time - first.time) : null;
  }
}

/**
 * Turns looks into what the page shows. It keeps the recent counts, for rates: give it every look, in
 * order, at a steady pace.
 */
export class DashboardModel {
  readonly #rates = new Rates();

  next(look: Look, time = Date.now(), problem?: string): DashboardSnapshot {
    const root = look.root;
    const lanes = new Map(root?.nodes.map((lane) => [lane.address, lane]));
    const nodes = look.nodes.map((node): NodeView => {
      const pipeline = node.status?.pipeline ?? null;
      const lane = lanes.get(node.address);
      const done = pipeline?.itemsDone;
      return {
        address: node.address,
        error: node.error,
        pipeline: pipeline === null ? null : `${pipeline.name} ${pipeline.version}`,
        workers: pipeline?.workers ?? node.status?.workers ?? 0,
        busy: pipeline === null ? 0 : pipeline.workers - pipeline.idleWorkers,
        replaced: pipeline?.workersReplaced ?? 0,
        memoryUsed: node.status?.memory.used ?? 0,
        memoryLimit: node.status?.memory.limit ?? 0,
        itemsPerSecond: done === undefined ? null : this.#rates.rate(`node ${node.address}`, time, done),
        roundTripMs: lane !== undefined ? lane.roundTripMs : (node.roundTripMs ?? null),
        inFlight: lane?.inFlight ?? pipeline?.inFlight ?? 0,
        window: lane?.window ?? null,
        lagMs: pipeline?.lagMs ?? null,
        stopping: node.status?.stopping === true,
      };
    });

    const reported = look.nodes.flatMap((node) => (node.status?.pipeline ? [node.status.pipeline.tasks] : []));
    const tasks = mergeTaskStats(reported).map(
      (task, index): TaskView => ({
        stage: index + 1,
        task: task.task,
        processed: task.processed,
        dropped: task.dropped,
        errors: task.errors,
        meanMs: task.meanMs,
        p99Ms: latencyQuantile(task.latency ?? [], 0.99),
        perSecond: this.#rates.rate(`task ${index} ${task.task}`, time, task.processed + task.errors),
      }),
    );

    const progress = root ? this.#rootProgress(root, time) : this.#nodesProgress(nodes, look, tasks, time);
    const errors = root?.errors ?? this.#nodesErrors(look);
    const names = new Set(nodes.flatMap((node) => (node.pipeline === null ? [] : [node.pipeline])));
    return {
      time,
      mode: root === undefined ? "nodes" : "root",
      pipeline: names.size === 0 ? null : [...names].join(", "),
      nodes,
      tasks,
      progress,
      errors: errors.slice(0, ERRORS_SHOWN),
      ...(problem === undefined ? {} : { problem }),
    };
  }

  #rootProgress(root: RootObservation, time: number): ProgressView {
    const { progress } = root;
    const rate = this.#rates.rate("done", time, progress.done);
    const left = progress.queued + progress.inFlight;
    return {
      done: progress.done,
      fed: progress.fed,
      queued: progress.queued,
      inFlight: progress.inFlight,
      outputs: progress.outputs,
      errors: progress.errors,
      resent: progress.resent,
      ratePerSecond: rate,
      etaSeconds: eta(left, rate),
    };
  }

  #nodesProgress(nodes: NodeView[], look: Look, tasks: TaskView[], time: number): ProgressView {
    const done = look.nodes.reduce((sum, node) => sum + (node.status?.pipeline?.itemsDone ?? 0), 0);
    const inFlight = nodes.reduce((sum, node) => sum + node.inFlight, 0);
    const rate = this.#rates.rate("done", time, done);
    return {
      done,
      fed: null,
      queued: null,
      inFlight,
      outputs: null,
      errors: tasks.reduce((sum, task) => sum + task.errors, 0),
      resent: null,
      ratePerSecond: rate,
      etaSeconds: eta(inFlight, rate),
    };
  }

  #nodesErrors(look: Look): RecentError[] {
    const errors = look.nodes.flatMap((node) =>
      (node.status?.pipeline?.recentErrors ?? []).map((error) => ({ ...error, node: node.address })),
    );
    return errors.sort((a, b) => b.time - a.time);
  }
}

function eta(left: number, rate: number | null): number | null {
  if (left === 0) return 0;
  return rate === null || rate <= 0 ? null : left / rate;
}
