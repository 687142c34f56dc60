import type { TaskStatsRecord } from "../protocol/pipeline.ts";
import { type NodeReport, formatTaskStats, mergeTaskStats, table } from "./inspect.ts";

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
  tasks: TaskStatsRecord[];
}

export interface BenchmarkReport {
  /** When the figures were read (ISO 8601). */
  at: string;
  /** Worker threads counted, over all nodes that run a pipeline. */
  workers: number;
  /** Per node: its pipeline, or why it could not be asked. */
  nodes: Array<{ address: string; pipeline?: { name: string; version: string; workers: number } | null; error?: string }>;
  /** Every worker's own figures (empty for nodes too old to give them). */
  perWorker: WorkerFigures[];
  /** Per task, summed over all workers of all nodes. */
  merged: TaskStatsRecord[];
}

export function benchmarkReport(reports: NodeReport[], at = new Date()): BenchmarkReport {
  const nodes: BenchmarkReport["nodes"] = [];
  const perWorker: WorkerFigures[] = [];
  let workers = 0;
  for (const report of reports) {
    const pipeline = report.status?.pipeline;
    if (report.error !== undefined || pipeline === undefined) {
      nodes.push({ address: report.address, error: report.error });
      continue;
    }
    nodes.push({ address: report.address, pipeline: pipeline && { name: pipeline.name, version: pipeline.version, workers: pipeline.workers } });
    if (pipeline === null) continue;
    workers += pipeline.tasksByWorker?.length ?? pipeline.workers;
    pipeline.tasksByWorker?.forEach((tasks, worker) => perWorker.push({ node: report.address, worker, tasks }));
  }
  const merged = mergeTaskStats(reports.flatMap((report) => (report.status?.pipeline ? [report.status.pipeline.tasks] : [])));
  return { at: at.toISOString(), workers, nodes, perWorker, merged };
}

const ms = (value: number) => Number(value.toFixed(3));

/** The merged table first (as `pcluster benchmark` always printed it), its worker count, then each worker's rows. */
export function formatBenchmark(report: BenchmarkReport): string {
  if (report.merged.length === 0) return formatTaskStats(report.merged);
  const running = report.nodes.filter((node) => node.pipeline);
  const pipelines = [...new Set(running.map((node) => `"${node.pipeline!.name}" ${node.pipeline!.version}`))].join(", ");
  const plural = (count: number, noun: string) => `${count} ${noun}${count === 1 ? "" : "s"}`;
  const lines = [
    formatTaskStats(report.merged),
    `merged over ${plural(report.workers, "worker")} on ${plural(running.length, "node")} (${pipelines})`,
  ];
  if (report.perWorker.length > 0) {
    const rows = report.perWorker.flatMap((figures) =>
      figures.tasks.map((task) => [figures.node, figures.worker, task.task, task.processed, task.dropped, task.errors, ms(task.totalMs), ms(task.meanMs)]),
    );
    lines.push("", "per worker:", table(["node", "worker", "task", "processed", "dropped", "errors", "total ms", "mean ms"], rows));
  }
  return lines.join("\n");
}
