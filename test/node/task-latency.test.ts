import { afterAll, expect, test } from "bun:test";
import { LATENCY_BOUNDS_MS, LATENCY_BUCKETS, latencyBucket, latencyQuantile } from "../../src/protocol/latency.ts";
import { EngineHarness, removeDir, writeTaskPackage } from "../support/engine.ts";

const dir = writeTaskPackage({
  "index.ts": `
export function spinMs(item) { const end = performance.now() + item.ms; while (performance.now() < end); return item; }
export function identity(item) { return item; }
export function failOdd(item) { if (item.i % 2) throw new Error("odd"); return item; }
`,
});
afterAll(() => removeDir(dir));

const sum = (counts: readonly number[]) => counts.reduce((total, count) => total + count, 0);

test("workers record each task's calls in its latency histogram: a bucket per call, merged over workers", async () => {
  const harness = await EngineHarness.start(
    dir,
    [{ export: "spinMs" }, { export: "failOdd" }, { export: "identity" }],
    { workers: 2 },
  );
  try {
    // 60 calls of at least 3 ms (a slow task: every call is timed), half of which then throw in task 2.
    harness.feed(Array.from({ length: 60 }, (_, i) => ({ ms: 3, i })));
    await harness.waitEmpty();
    const [spin, fail, identity] = harness.engine.stats();
    for (const task of [spin!, fail!, identity!]) expect(task.latency).toHaveLength(LATENCY_BUCKETS);
    // Every call of the slow task is in the histogram, none below its 3 ms of spinning.
    expect(sum(spin!.latency!)).toBe(60);
    expect(sum(spin!.latency!.slice(0, latencyBucket(3)))).toBe(0);
    expect(latencyQuantile(spin!.latency!, 0.99)).toBeGreaterThan(LATENCY_BOUNDS_MS[latencyBucket(3) - 1]!);
    // A call that threw is timed too: 30 returned, 30 threw. The first 64 calls of any task are all timed.
    expect(fail!.processed + fail!.errors).toBe(60);
    expect(sum(fail!.latency!)).toBe(60);
    expect(sum(identity!.latency!)).toBe(30);
    // Per worker, the histograms add up to the merged one.
    const perWorker = harness.engine.statsByWorker().map((tasks) => sum(tasks[0]!.latency!));
    expect(perWorker).toHaveLength(2);
    expect(sum(perWorker)).toBe(60);
  } finally {
    await harness.engine.reset();
  }
});
