import { type HostPort, parseAddress } from "../protocol/address.ts";
import type { ClientTls } from "../protocol/connection.ts";
import { addLatency } from "../protocol/latency.ts";
import { type NodeStatus, type TaskStats, parseNodeStatus } from "../protocol/pipeline.ts";
import { askNodeStatus } from "./node-client.ts";

/**
 * What `pcluster status` and `pcluster benchmark` print: each node's status, and the per-task counts
 * merged over all workers of all nodes (the seed's benchmark summary).
 */

/** One node's answer to `pcluster status`: its status, or why it could not be asked. */
export interface StatusReply {
  address: string;
  status?: NodeStatus;
  error?: string;
}

export interface InspectOptions {
  token?: string;
  tls?: ClientTls;
  timeoutMs?: number;
}

/** Asks every node for its status, in parallel; a node that cannot be reached is reported, not thrown. */
export async function fetchStatuses(nodes: HostPort[], options: InspectOptions = {}): Promise<StatusReply[]> {
  const timeoutMs = options.timeoutMs ?? 3000;
  return Promise.all(
    nodes.map(async (node): Promise<StatusReply> => {
      const { host, port, key } = parseAddress(node, "node address");
      try {
        const { token, tls } = options;
        const ask = { token, tls, connectTimeoutMs: timeoutMs, answerTimeoutMs: timeoutMs };
        return { address: key, status: parseNodeStatus(await askNodeStatus(host, port, ask)) };
      } catch (error) {
        return { address: key, error: (error as Error).message };
      }
    }),
  );
}

/** Per-task counters summed over nodes (tasks matched by position and name). */
export function mergeTaskStats(perNode: TaskStats[][]): TaskStats[] {
  const merged: TaskStats[] = [];
  for (const tasks of perNode) {
    tasks.forEach((task, index) => {
      const into = (merged[index] ??= { task: task.task, processed: 0, dropped: 0, errors: 0, totalMs: 0, meanMs: 0 });
      into.processed += task.processed;
      into.dropped += task.dropped;
      into.errors += task.errors;
      into.totalMs += task.totalMs;
      if (task.retries !== undefined) into.retries = (into.retries ?? 0) + task.retries;
      if (task.latency !== undefined) addLatency((into.latency ??= []), task.latency);
    });
  }
  for (const task of merged) {
    const calls = task.processed + task.errors + (task.retries ?? 0);
    task.meanMs = calls > 0 ? task.totalMs / calls : 0;
  }
  return merged;
}

/** A plain text table: a header row, then rows, columns padded (numbers right-aligned). */
export function table(header: string[], rows: Array<Array<string | number>>): string {
  const cells = [header, ...rows.map((row) => row.map(String))];
  const widths = header.map((_, column) => Math.max(...cells.map((row) => row[column]!.length)));
  const numeric = header.map((_, column) => rows.length > 0 && rows.every((row) => typeof row[column] === "number"));
  return cells
    .map((row) =>
      row
        .map((cell, column) => (numeric[column] ? cell.padStart(widths[column]!) : cell.padEnd(widths[column]!)))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

const ms = (value: number) => Number(value.toFixed(3));

const megabytes = (bytes: number): number => Math.round(bytes / 1048576);

export function formatStatuses(reports: StatusReply[]): string {
  const header = ["node", "pid", "pipeline", "root", "cores", "workers", "idle", "state", "started", "memory", "lag"];
  const rows = reports.map((report) => {
    const status = report.status;
    if (status === undefined) {
      return [report.address, "", `unreachable: ${report.error}`, ...Array<string>(header.length - 3).fill("")];
    }
    const pipeline = status.pipeline;
    return [
      report.address,
      status.pid === undefined ? "" : `${status.pid}`,
      pipeline ? `${pipeline.name} ${pipeline.version}` : "(idle)",
      pipeline ? pipeline.owner : "",
      `${status.cores}`,
      pipeline
        ? `${pipeline.workers}${pipeline.workersReplaced > 0 ? ` (${pipeline.workersReplaced} replaced)` : ""}`
        : `${status.workers}`,
      pipeline ? `${pipeline.idleWorkers}` : "",
      status.stopping ? "stopping" : pipeline ? (pipeline.awake ? "awake" : "asleep") : "",
      pipeline ? new Date(pipeline.startedAt).toISOString() : "",
      `${megabytes(status.memory.used)} of ${megabytes(status.memory.limit)} MB`,
      pipeline?.lagMs === undefined ? "" : `${pipeline.lagMs.toFixed(1)} ms`,
    ];
  });
  return table(header, rows);
}

export function formatTaskStats(tasks: TaskStats[]): string {
  if (tasks.length === 0) return "no pipeline runs on these nodes";
  return table(
    ["task", "processed", "dropped", "errors", "total ms", "mean ms"],
    tasks.map((task) => [task.task, task.processed, task.dropped, task.errors, ms(task.totalMs), ms(task.meanMs)]),
  );
}
