import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { Root } from "../../src/index.ts";
import * as tasks from "../fixtures/tasks/index.ts";
import { REPO, killAll } from "../support/processes.ts";
import { type ParsedFamily, sampleValue, scrape } from "../support/prometheus-text.ts";
import { waitUntil } from "../support/wait.ts";

const TASKS = join(REPO, "test/fixtures/tasks");
const ITEMS = 400;
let cluster: Root | undefined;

afterAll(async () => {
  await cluster?.close();
  await killAll();
});

const value = (families: Map<string, ParsedFamily>, name: string, labels: Record<string, string> = {}) =>
  sampleValue(families, name, labels);

test("cluster.serveMetrics: fed, done, queue, in flight and each node's window and round trip; stopped by reset", async () => {
  delete process.env.PCLUSTER_TOKEN;
  cluster = await Root.local({ nodes: 2, workers: 1 });
  await cluster.setup("root-metrics", "1", [{ function: tasks.blockOrFail }], {
    localPackages: [TASKS],
    errorHandler: () => {},
  });
  const served = cluster.serveMetrics({ port: 0 });
  expect(served.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
  const metrics = `${served.url}metrics`;
  const nodes = cluster.nodes;

  const before = await scrape(metrics);
  expect(value(before, "pcluster_root_items_fed_total")).toBe(0);
  expect(value(before, "pcluster_root_nodes")).toBe(2);

  const running = cluster.run(Array.from({ length: ITEMS }, (_, id) => ({ ms: 3, id })));
  const during = await waitUntil(
    "items done, and others in flight, with a round trip measured on every node",
    () => scrape(metrics),
    (families) =>
      value(families, "pcluster_root_items_done_total") > 0 &&
      value(families, "pcluster_root_items_in_flight") > 0 &&
      families.get("pcluster_root_node_round_trip_seconds")?.samples.length === 2,
  );
  expect(value(during, "pcluster_root_items_fed_total")).toBeGreaterThan(0);
  expect(value(during, "pcluster_root_items_done_total")).toBeLessThan(ITEMS);
  for (const node of nodes) {
    expect(value(during, "pcluster_root_node_workers", { node })).toBe(1);
    expect(value(during, "pcluster_root_node_window_items", { node })).toBeGreaterThanOrEqual(4);
    expect(value(during, "pcluster_root_node_round_trip_seconds", { node })).toBeGreaterThan(0.003); // one item spins 3 ms
    expect(value(during, "pcluster_root_node_min_round_trip_seconds", { node })).toBeGreaterThan(0.003);
  }
  const inFlight = nodes.reduce((sum, node) => sum + value(during, "pcluster_root_node_in_flight_items", { node }), 0);
  expect(inFlight).toBe(value(during, "pcluster_root_items_in_flight"));

  await running;
  const after = await scrape(metrics);
  const progress = cluster.progress;
  expect(value(after, "pcluster_root_items_fed_total")).toBe(ITEMS);
  expect(value(after, "pcluster_root_items_done_total")).toBe(ITEMS);
  expect(value(after, "pcluster_root_items_queued")).toBe(0);
  expect(value(after, "pcluster_root_items_in_flight")).toBe(0);
  expect(value(after, "pcluster_root_items_resent_total")).toBe(0);
  expect(value(after, "pcluster_root_task_errors_total")).toBe(ITEMS / 10);
  expect(value(after, "pcluster_root_outputs_total")).toBe(progress.outputs);
  expect(progress.outputs).toBe(ITEMS - (2 * ITEMS) / 10);

  await cluster.reset();
  await expect(fetch(metrics, { signal: AbortSignal.timeout(3000) })).rejects.toThrow();
}, 60_000);
