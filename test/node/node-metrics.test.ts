import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { Root } from "../../src/index.ts";
import { LATENCY_BOUNDS_MS } from "../../src/protocol/latency.ts";
import * as tasks from "../fixtures/tasks/index.ts";
import { type RunningNode, runCli, startNode, tearDown } from "../support/nodes.ts";
import { REPO } from "../support/processes.ts";
import { type ParsedFamily, sampleValue, scrape } from "../support/prometheus-text.ts";
import { waitUntil } from "../support/wait.ts";

const TASKS = join(REPO, "test/fixtures/tasks");
const ITEMS = 300;
const roots: Root[] = [];
const nodes: RunningNode[] = [];

afterAll(async () => {
  await Promise.all(roots.map((root) => root.close()));
  await tearDown(
    [],
    nodes.map((node) => node.workdir),
  );
});

/** A node with metrics on a free port (of 127.0.0.1 unless `host`); resolves with it and its /metrics URL. */
async function nodeWithMetrics(host?: string): Promise<{ node: RunningNode; metrics: string }> {
  const node = await startNode({
    workers: 2,
    args: ["--metrics-port", "0", ...(host ? ["--metrics-host", host] : [])],
  });
  nodes.push(node);
  const [, url] = await node.proc.waitFor(/serving Prometheus metrics at (http:\/\/[\d.]+:\d+\/metrics)/);
  return { node, metrics: url! };
}

const value = (families: Map<string, ParsedFamily>, name: string, labels: Record<string, string> = {}) =>
  sampleValue(families, name, labels);

test("pcluster node --metrics-port serves /metrics: per-task counters and histograms, workers, memory, rings", async () => {
  const { node, metrics } = await nodeWithMetrics();

  const idle = await scrape(metrics);
  expect(value(idle, "pcluster_workers")).toBe(0);
  expect(value(idle, "pcluster_memory_used_bytes")).toBeGreaterThan(0);
  expect(value(idle, "pcluster_memory_limit_bytes")).toBeGreaterThan(value(idle, "pcluster_memory_used_bytes"));
  expect(value(idle, "pcluster_engine_lag_seconds")).toBe(0); // no pipeline, no engine
  expect(idle.has("pcluster_task_processed_total")).toBe(false); // no pipeline, no tasks
  expect((await fetch(metrics.replace("/metrics", "/nope"))).status).toBe(404);

  const root = new Root([node.addr]);
  roots.push(root);
  await root.setup("metered", "2", [{ function: tasks.blockOrFail }, { function: tasks.identity }], {
    localPackages: [TASKS],
    errorHandler: () => {},
  });
  const running = root.run(Array.from({ length: ITEMS }, (_, id) => ({ ms: 4, id })));

  // During the run: a valid exposition whose counters only grow.
  const first = await waitUntil(
    "some items processed and some in flight",
    () => scrape(metrics),
    (families) =>
      families.has("pcluster_task_processed_total") &&
      value(families, "pcluster_task_processed_total", { stage: "1" }) > 0 &&
      value(families, "pcluster_items_in_flight") > 0,
  );
  expect(value(first, "pcluster_workers")).toBe(2);
  const lag = value(first, "pcluster_engine_lag_seconds"); // 4 ms items: the engine lingers on a timer
  expect(lag).toBeGreaterThanOrEqual(0);
  expect(lag).toBeLessThan(60);
  expect(value(first, "pcluster_pipeline_info", { name: "metered", version: "2" })).toBe(1);
  const second = await waitUntil(
    "more items processed",
    () => scrape(metrics),
    (families) =>
      value(families, "pcluster_task_processed_total", { stage: "1" }) >
      value(first, "pcluster_task_processed_total", { stage: "1" }),
  );
  for (const name of [
    "pcluster_items_done_total",
    "pcluster_task_errors_total",
    "pcluster_task_duration_seconds_count",
  ]) {
    const labels: Record<string, string> = name.startsWith("pcluster_task") ? { stage: "1" } : {};
    expect(value(second, name, labels)).toBeGreaterThanOrEqual(value(first, name, labels));
  }

  // The status a root asks for, and `pcluster status`, carry the lag too.
  const [status] = await root.status();
  expect(status!.pipeline!.lagMs).toBeGreaterThanOrEqual(0);
  const table = await runCli(["status", "--nodes", node.addr]);
  expect(table.code).toBe(0);
  expect(table.stdout).toMatch(/^node\s.*\smemory\s+lag$/m);
  expect(table.stdout).toMatch(
    new RegExp(`^${node.addr.replaceAll(".", "\\.")}\\s+${node.proc.pid}\\s+metered 2\\s.*\\s\\d+\\.\\d ms$`, "m"),
  );

  await running;
  const after = await scrape(metrics);
  const stats = await root.stats();
  // A tenth throw in task 1 and a tenth are dropped there: task 2 sees the rest.
  expect(stats.map((task) => task.processed + task.errors)).toEqual([ITEMS, ITEMS - (2 * ITEMS) / 10]);
  for (const [index, task] of stats.entries()) {
    const labels = { stage: String(index + 1), task: task.task };
    expect(value(after, "pcluster_task_processed_total", labels)).toBe(task.processed);
    expect(value(after, "pcluster_task_dropped_total", labels)).toBe(task.dropped);
    expect(value(after, "pcluster_task_errors_total", labels)).toBe(task.errors);
    expect(value(after, "pcluster_task_duration_seconds_sum", labels)).toBeCloseTo(task.totalMs / 1000, 9);
    // The same buckets as the status reply, cumulative, with `le` in seconds.
    const buckets = after
      .get("pcluster_task_duration_seconds")!
      .samples.filter(
        (sample) => sample.name === "pcluster_task_duration_seconds_bucket" && sample.labels.stage === labels.stage,
      );
    expect(buckets.map((sample) => sample.labels.le)).toEqual([
      ...LATENCY_BOUNDS_MS.map((ms) => String(ms / 1000)),
      "+Inf",
    ]);
    let cumulative = 0;
    for (const [bucket, sample] of buckets.entries()) expect(sample.value).toBe((cumulative += task.latency![bucket]!));
  }
  // The blocking task (4 ms a call) is timed on every call: its histogram counts them all, none under 4 ms.
  const spin = { stage: "1", task: "blockOrFail" };
  expect(value(after, "pcluster_task_duration_seconds_count", spin)).toBe(ITEMS);
  expect(value(after, "pcluster_task_duration_seconds_bucket", { ...spin, le: "0.0025" })).toBe(0);
  expect(value(after, "pcluster_task_errors_total", spin)).toBe(ITEMS / 10);
  expect(value(after, "pcluster_task_dropped_total", spin)).toBe(ITEMS / 10);
  expect(value(after, "pcluster_items_done_total")).toBe(ITEMS);
  expect(value(after, "pcluster_items_in_flight")).toBe(0);
  expect(value(after, "pcluster_workers_busy")).toBe(0);
  expect(value(after, "pcluster_workers_replaced_total")).toBe(0);
  expect(value(after, "pcluster_items_retried_total")).toBe(0);
  for (const worker of ["0", "1"]) {
    for (const ring of ["input", "output"]) {
      const size = value(after, "pcluster_ring_size_bytes", { worker, ring });
      expect(size).toBeGreaterThanOrEqual(1 << 20);
      // A worker gives its input ring's bytes back in batches: a few records' worth may still be held.
      expect(value(after, "pcluster_ring_used_bytes", { worker, ring })).toBeLessThan(size);
    }
  }

  await root.reset();
  const reset = await scrape(metrics);
  expect(value(reset, "pcluster_workers")).toBe(0);
  expect(reset.has("pcluster_task_processed_total")).toBe(false);
}, 60_000);

test("a metrics port in use, or --metrics-host alone, is refused with a message naming it", async () => {
  const { node, metrics } = await nodeWithMetrics();
  const port = new URL(metrics).port;
  const taken = await runCli([
    "node",
    "--host",
    "127.0.0.1",
    "--port",
    "0",
    "--workdir",
    node.workdir,
    "--metrics-port",
    port,
  ]);
  expect(taken.code).toBe(1);
  expect(taken.stderr).toContain(`cannot serve the node metrics on 127.0.0.1:${port}: the port is in use`);
  const alone = await runCli(["node", "--port", "0", "--metrics-host", "127.0.0.1"]);
  expect(alone.code).toBe(2);
  expect(alone.stderr).toContain("--metrics-host needs --metrics-port");
  const bad = await runCli(["node", "--port", "0", "--metrics-port", "99999"]);
  expect(bad.code).toBe(2);
  expect(bad.stderr).toContain('--metrics-port must be a port from 0 to 65535, got "99999"');
}, 30_000);

test("--metrics-host puts the metrics on another address than the node's", async () => {
  const { node, metrics } = await nodeWithMetrics("127.0.0.2");
  expect(metrics).toMatch(/^http:\/\/127\.0\.0\.2:\d+\/metrics$/);
  expect(node.addr).toStartWith("127.0.0.1:");
  expect(sampleValue(await scrape(metrics), "pcluster_workers")).toBe(0);
  // Nothing on 127.0.0.1 at that port: the metrics listen where they were told only.
  await expect(
    fetch(metrics.replace("127.0.0.2", "127.0.0.1"), { signal: AbortSignal.timeout(3000) }),
  ).rejects.toThrow();
}, 30_000);
