import { type HttpEndpoint, type ListenOptions, serveMetricsText } from "../metrics/http.ts";
import { MetricsText, type Sample } from "../metrics/prometheus.ts";
import { LATENCY_BOUNDS_MS } from "../protocol/latency.ts";
import type { NodeStatus, TaskStats } from "../protocol/pipeline.ts";

/** What a node's /metrics shows: its status, and what only the node itself sees of its engine. */
export interface NodeObservation {
  status: NodeStatus;
  /** Per worker: bytes in its input and output rings, and their sizes. */
  rings: Array<{ input: number; inputSize: number; output: number; outputSize: number }>;
  retries: { retried: number; givenUp: number };
  /** Input bytes waiting for room in the rings. */
  backlogBytes: number;
}

type Ring = NodeObservation["rings"][number];

const seconds = (ms: number): number => ms / 1000;

/**
 * The node's metrics in the Prometheus text format. Counters count since the pipeline was set up: a
 * new setup starts them at 0 again, which Prometheus' `rate()` takes as a counter reset.
 */
export function nodeMetricsText({ status, rings, retries, backlogBytes }: NodeObservation): string {
  const text = new MetricsText();
  const pipeline = status.pipeline;
  const version = [{ labels: { version: status.version }, value: 1 }];
  text.gauge("pcluster_node_info", "The node's pcluster version (value 1).", version);
  text.gauge("pcluster_node_cores", "CPU cores of the node's machine.", status.cores);
  if (pipeline !== null) {
    const labels = { name: pipeline.name, version: pipeline.version, root: pipeline.owner };
    text.gauge("pcluster_pipeline_info", "The pipeline set up on the node (value 1).", [{ labels, value: 1 }]);
  }
  const workers = pipeline?.workers ?? 0;
  const busy = pipeline ? pipeline.workers - pipeline.idleWorkers : 0;
  text
    .gauge("pcluster_memory_used_bytes", "Resident memory of the node process.", status.memory.used)
    .gauge("pcluster_memory_limit_bytes", "Memory above which a runaway worker is ended.", status.memory.limit)
    .gauge("pcluster_workers", "Worker threads of the pipeline (0 without one).", workers)
    .gauge("pcluster_workers_busy", "Workers with items queued or running.", busy)
    .counter("pcluster_workers_replaced_total", "Workers that died or were ended.", pipeline?.workersReplaced ?? 0)
    .gauge("pcluster_items_in_flight", "Root items accepted and not finished.", pipeline?.inFlight ?? 0)
    .counter("pcluster_items_done_total", "Root items finished.", pipeline?.itemsDone ?? 0)
    .counter("pcluster_items_retried_total", "Items run again: their worker died on them.", retries.retried)
    .counter("pcluster_items_given_up_total", "Items given up: their worker died on them too often.", retries.givenUp)
    .gauge("pcluster_input_backlog_bytes", "Input bytes waiting for room in the rings.", backlogBytes)
    .gauge(
      "pcluster_engine_lag_seconds",
      "How late the node's socket thread runs its timers; above a few ms, the node's cores are overloaded.",
      seconds(pipeline?.lagMs ?? 0),
    );

  const perRing = (pick: (ring: Ring, kind: "input" | "output") => number): Sample[] =>
    rings.flatMap((ring, worker) =>
      (["input", "output"] as const).map((kind) => ({
        labels: { worker: String(worker), ring: kind },
        value: pick(ring, kind),
      })),
    );
  text
    .gauge(
      "pcluster_ring_used_bytes",
      "Bytes waiting in a worker's ring.",
      perRing((ring, kind) => ring[kind]),
    )
    .gauge(
      "pcluster_ring_size_bytes",
      "Size of a worker's ring.",
      perRing((ring, kind) => ring[`${kind}Size`]),
    );

  const tasks = pipeline?.tasks ?? [];
  const taskLabels = (task: TaskStats, stage: number) => ({ stage: String(stage + 1), task: task.task });
  const perTask = (value: (task: TaskStats) => number): Sample[] =>
    tasks.map((task, stage) => ({ labels: taskLabels(task, stage), value: value(task) }));
  const latency = tasks.map((task, stage) => ({
    labels: taskLabels(task, stage),
    counts: task.latency ?? [],
    sum: seconds(task.totalMs),
  }));
  text
    .counter(
      "pcluster_task_processed_total",
      "Calls that returned (null too).",
      perTask((task) => task.processed),
    )
    .counter(
      "pcluster_task_dropped_total",
      "Calls that returned null: item dropped.",
      perTask((task) => task.dropped),
    )
    .counter(
      "pcluster_task_errors_total",
      "Calls that threw: item dropped.",
      perTask((task) => task.errors),
    )
    .counter(
      "pcluster_task_retries_total",
      "Calls that threw and were run again (the task's retry).",
      perTask((task) => task.retries ?? 0),
    )
    .histogram(
      "pcluster_task_duration_seconds",
      "Time per task call (lazy generators: per output); calls under 20 us are sampled 1 in 16, weighted.",
      LATENCY_BOUNDS_MS.map(seconds),
      latency,
    );
  return text.toString();
}

/** Serves `GET /metrics` from a fresh observation on every scrape. */
export function serveNodeMetrics(observe: () => NodeObservation, options: ListenOptions): HttpEndpoint {
  return serveMetricsText("node", () => nodeMetricsText(observe()), options);
}
