import type { TaskStats } from "../protocol/pipeline.ts";
import { type StatusReply, formatTaskStats, mergeTaskStats, table } from "./inspect.ts";

/**
 * What `pcluster benchmark` shows and `--out` saves: the original's benchmark summary (per task:
 * processed, total and mean time, with the worker count), merged over every worker of every node, and
 * each worker's own figures beside it.
 */

export interface WorkerFigures {
  /** The node, as "host:port". */
  node: string;
  /** The worker thread's index on its node. */
  worker: number;
  tasks: TaskStats[];
}

export interface BenchmarkReport {
  /** When the figures were read (ISO 8601). */
  at: string;
  /** Worker threads counted, over all nodes that run a pipeline. */
  workers: number;
  /** Per node: its pipeline, or why it could not be asked. */
  nodes: Array<{
    address: string;
    pipeline?: { name: string; version: string; workers: number } | null;
    error?: string;
  }>;
  /** Every worker's own figures (empty for nodes too old to give them). */
  perWorker: WorkerFigures[];
  /** Per task, summed over all workers of all nodes. */
  merged: TaskStats[];
}

/**
 * The figures of nodes' status replies: merged per task, per worker, and the worker count. Nodes that
 * could not be asked are listed with their error; idle ones with `pipeline: null`.
 *
 * @example
 * const report = benchmarkReport(await fetchStatuses(["127.0.0.1:6000"]));
 * console.log(formatBenchmark(report));
 */
export function benchmarkReport(reports: StatusReply[], at = new Date()): BenchmarkReport {
  const nodes: BenchmarkReport["nodes"] = [];
  const perWorker: WorkerFigures[] = [];
  let workers = 0;
  for (const report of reports) {
    const pipeline = report.status?.pipeline;
    if (report.error !== undefined || pipeline === undefined) {
      nodes.push({ address: report.address, error: report.error });
      continue;
    }
    if (pipeline === null) {
      nodes.push({ address: report.address, pipeline: null }); // idle: no figures to give
      continue;
    }
    const { name, version } = pipeline;
    nodes.push({ address: report.address, pipeline: { name, version, workers: pipeline.workers } });
    workers += pipeline.tasksByWorker?.length ?? pipeline.workers;
    for (const [worker, tasks] of (pipeline.tasksByWorker ?? []).entries())
      perWorker.push({ node: report.address, worker, tasks });
  }
  const merged = mergeTaskStats(
    reports.flatMap((report) => (report.status?.pipeline ? [report.status.pipeline.tasks] : [])),
  );
  return { at: at.toISOString(), workers, nodes, perWorker, merged };
}

const ms = (value: number) => Number(value.toFixed(3));

/** The merged table first (as `pcluster benchmark` always printed it), its worker count, then each worker's rows. */
export function formatBenchmark(report: BenchmarkReport): string {
  if (report.merged.length === 0) return formatTaskStats(report.merged);
  const running = report.nodes.filter((node) => node.pipeline);
  const names = running.map((node) => `"${node.pipeline!.name}" ${node.pipeline!.version}`);
  const pipelines = [...new Set(names)].join(", ");
  const plural = (count: number, noun: string) => `${count} ${noun}${count === 1 ? "" : "s"}`;
  const lines = [
    formatTaskStats(report.merged),
    `merged over ${plural(report.workers, "worker")} on ${plural(running.length, "node")} (${pipelines})`,
  ];
  if (report.perWorker.length > 0) {
    const rows = report.perWorker.flatMap((figures) =>
      figures.tasks.map((task) => [
        figures.node,
        figures.worker,
        task.task,
        task.processed,
        task.dropped,
        task.errors,
        ms(task.totalMs),
        ms(task.meanMs),
      ]),
    );
    const header = ["node", "worker", "task", "processed", "dropped", "errors", "total ms", "mean ms"];
    lines.push("", "per worker:", table(header, rows));
  }
  return lines.join("\n");
}
