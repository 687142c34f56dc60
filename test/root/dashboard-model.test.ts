import { describe, expect, test } from "bun:test";
import type { RecentError } from "../../src/metrics/recent-errors.ts";
import { LATENCY_BUCKETS, latencyBucket } from "../../src/protocol/latency.ts";
import type { NodeStatus, TaskStats } from "../../src/protocol/pipeline.ts";
import { DashboardModel, type Look } from "../../src/root/dashboard/snapshot.ts";
import type { RootObservation } from "../../src/root/observation.ts";

/** A task's stats with `calls` calls of `ms` each. */
function task(name: string, calls: number, ms: number, errors = 0): TaskStats {
  const latency = new Array<number>(LATENCY_BUCKETS).fill(0);
  latency[latencyBucket(ms)] = calls + errors;
  return { task: name, processed: calls, dropped: 0, errors, totalMs: (calls + errors) * ms, meanMs: ms, latency };
}

function node(
  address: string,
  itemsDone: number,
  tasks: TaskStats[],
  recentErrors: RecentError[] = [],
  lagMs?: number,
) {
  const status: NodeStatus = {
    host: "h",
    listen: address,
    version: "0",
    cores: 2,
    workers: 2,
    memory: { used: 100, limit: 1000 },
    pipeline: {
      name: "p",
      version: "1",
      owner: "root",
      busy: false,
      startedAt: 0,
      workers: 2,
      idleWorkers: 1,
      awake: true,
      inFlight: 5,
      workersReplaced: 0,
      tasks,
      itemsDone,
      recentErrors,
      ...(lagMs === undefined ? {} : { lagMs }),
    },
  };
  return { address, status, roundTripMs: 2 };
}

describe("DashboardModel", () => {
  test("nodes alone: tasks merged over nodes with their p99, rates over time, ETA of what the nodes hold", () => {
    const model = new DashboardModel();
    const look = (doneA: number, doneB: number): Look => ({
      nodes: [
        node(
          "a:1",
          doneA,
          [task("slow", doneA, 20)],
          [{ time: 5, task: "slow", item: 3, message: "older", failed: false }],
        ),
        node(
          "b:1",
          doneB,
          [task("slow", doneB, 40)],
          [{ time: 9, task: "slow", item: 4, message: "newer", failed: true }],
          12.5,
        ),
        { address: "c:1", error: "could not connect" },
      ],
    });
    const first = model.next(look(100, 100), 10_000);
    expect(first.mode).toBe("nodes");
    expect(first.pipeline).toBe("p 1");
    expect(first.progress).toMatchObject({ done: 200, inFlight: 10, ratePerSecond: null, etaSeconds: null, fed: null });
    expect(first.tasks).toHaveLength(1);
    expect(first.tasks[0]).toMatchObject({ task: "slow", processed: 200, meanMs: 30 });
    expect(first.tasks[0]!.p99Ms).toBeGreaterThan(25); // half the calls took 40 ms
    expect(first.nodes.map((n) => [n.address, n.busy, n.roundTripMs, n.error])).toEqual([
      ["a:1", 1, 2, undefined],
      ["b:1", 1, 2, undefined],
      ["c:1", 0, null, "could not connect"],
    ]);
    // Each node's thread lag, as its status gives it (none from a node of before it, or unreachable).
    expect(first.nodes.map((n) => n.lagMs)).toEqual([null, 12.5, null]);
    expect(first.nodes.map((n) => n.stopping)).toEqual([false, false, false]);
    const finishing = node("d:1", 0, []);
    const stopping = new DashboardModel().next({
      nodes: [{ ...finishing, status: { ...finishing.status, stopping: true } }],
    });
    expect(stopping.nodes[0]!.stopping).toBe(true); // finishing its items before it stops
    expect(first.errors.map((error) => [error.message, error.node])).toEqual([
      ["newer", "b:1"],
      ["older", "a:1"],
    ]);

    const second = model.next(look(150, 250), 12_000); // 200 more in 2 s
    expect(second.progress.ratePerSecond).toBe(100);
    expect(second.progress.etaSeconds).toBeCloseTo(10 / 100, 9);
    expect(second.nodes[0]!.itemsPerSecond).toBe(25);
    expect(second.nodes[1]!.itemsPerSecond).toBe(75);
    expect(second.tasks[0]!.perSecond).toBe(100);

    // Counters that went down were reset by a new setup: no negative rate, a fresh start.
    const third = model.next(look(10, 10), 13_000);
    expect(third.progress.ratePerSecond).toBeNull();
  });

  test("a root: its own counts, each node's window and round trip, ETA of what waits at the root", () => {
    const model = new DashboardModel();
    const root = (done: number): RootObservation => ({
      progress: { fed: 1000, done, outputs: done * 2, errors: 1, resent: 0, queued: 1000 - done - 50, inFlight: 50 },
      nodes: [
        {
          address: "a:1",
          workers: 2,
          idleWorkers: 0,
          window: 64,
          inFlight: 50,
          inFlightBytes: 900,
          roundTripMs: 7,
          minRoundTripMs: 3,
        },
      ],
      errors: [{ time: 1, task: "t", item: 1, message: "m", failed: false, node: "a:1" }],
    });
    model.next({ nodes: [node("a:1", 0, [task("t", 0, 1)])], root: root(100) }, 0);
    const view = model.next({ nodes: [node("a:1", 0, [task("t", 0, 1)])], root: root(300) }, 1000);
    expect(view.mode).toBe("root");
    expect(view.progress).toMatchObject({
      done: 300,
      fed: 1000,
      queued: 650,
      inFlight: 50,
      outputs: 600,
      ratePerSecond: 200,
    });
    expect(view.progress.etaSeconds).toBe(700 / 200);
    expect(view.nodes[0]).toMatchObject({ window: 64, inFlight: 50, roundTripMs: 7 });
    expect(view.errors).toHaveLength(1);
  });
});
