import { afterAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { EngineHarness, type ErrorRecord, removeDir, writeTaskPackage } from "../support/engine.ts";
import { spawnBun } from "../support/processes.ts";
import { encode } from "../../src/protocol/codec.ts";
import { RECORD_HEADER_BYTES } from "../../src/protocol/record.ts";

const TASKS = `
const thread = Math.random().toString(36).slice(2);
export function identity(item) { return item; }
export function fanOut(count) { return (function* () { for (let i = 0; i < count; i++) yield i; })(); }
export function work(i) { let x = i; for (let k = 0; k < 300; k++) x = (x * 31 + k) % 1000003; return { i, thread, pad: "y".repeat(4000) }; }
export function big(n) { const bytes = new Uint8Array(n); for (let i = 0; i < n; i += 4096) bytes[i] = (i >>> 12) & 255; return bytes; }
export function checksum(bytes) { let s = 0; for (let i = 0; i < bytes.length; i += 4096) s += bytes[i]; return { length: bytes.length, s }; }
export function hog(item) {
  if (item !== "hog") return item;
  const kept = [];
  for (;;) kept.push(new Array(4096).fill(kept.length)); // never returns: only ending its worker stops it
}
export function stuckOn(item) {
  if (item === "loop") for (;;); // never returns: only ending its worker stops it
  if (item === "wait") return new Promise(() => {}); // never settles
  return item;
}
export function exitOn(item) { if (item === "die") process.exit(3); return item; }
export function throwLaterOn(item) {
  if (item === "boom") { setTimeout(() => { throw new Error("async boom"); }, 0); return new Promise(() => {}); }
  return item;
}
export function dieOnce(item) {
  // Dies the first time it sees "flaky" in this worker thread only if a marker file is absent.
  if (item.flaky && !globalThis.__seen && !require("node:fs").existsSync(item.marker)) {
    require("node:fs").writeFileSync(item.marker, "x");
    process.exit(4);
  }
  return item.value;
}
export function cpu(item) { const end = performance.now() + 2; while (performance.now() < end); return item; }
export function split(count) { return Array.from({ length: count }, (_, i) => ({ i, parent: thread })); }
export function slowWhere(sub) { const end = performance.now() + 0.2; while (performance.now() < end); return { ...sub, thread }; }
`;

const dir = writeTaskPackage({ "index.ts": TASKS });
afterAll(() => removeDir(dir));

describe("fan-out and memory", () => {
  test("a small fan-out runs where its item runs; a large one is shared with an idle worker", async () => {
    const harness = await EngineHarness.start(dir, [{ export: "split", isGenerator: true }, { export: "slowWhere" }], {
      workers: 2,
    });
    try {
      // One item at a time, so that the other worker is idle (and hungry) all along.
      for (let i = 0; i < 20; i++) {
        harness.feed([2]);
        await harness.waitEmpty();
      }
      const small = harness.values() as Array<{ parent: string; thread: string }>;
      expect(small.length).toBe(40);
      for (const sub of small) expect(sub.thread).toBe(sub.parent);
      harness.outputs.length = 0;
      harness.feed([400]);
      await harness.waitEmpty();
      const large = harness.values() as Array<{ i: number; parent: string; thread: string }>;
      expect(large.length).toBe(400);
      const away = large.filter((sub) => sub.thread !== sub.parent);
      expect(away.length).toBeGreaterThan(50);
      for (const sub of away) expect(sub.i).toBeGreaterThanOrEqual(32); // the first 32 always run at home
    } finally {
      await harness.engine.reset();
    }
  });

  test("a 100 000-way generator keeps memory bounded and busies both workers", async () => {
    const harness = await EngineHarness.start(dir, [{ export: "fanOut", isGenerator: true }, { export: "work" }], {
      workers: 2,
    });
    harness.keepOutputs = false;
    let maxBatch = 0;
    harness.onBatch = (records) => (maxBatch = Math.max(maxBatch, records.length));
    Bun.gc(true);
    const rssBefore = process.memoryUsage.rss();
    let rssPeak = rssBefore;
    const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, process.memoryUsage.rss())), 20);
    let perWorker: number[] = [];
    try {
      harness.feed([100_000]);
      await harness.waitEmpty(60_000);
      perWorker = harness.engine.statsByWorker().map((tasks) => tasks[1]!.processed);
    } finally {
      clearInterval(sampler);
      await harness.engine.reset();
    }
    expect(harness.outputCount).toBe(100_000);
    expect(harness.done.length).toBe(1);
    // ~400 MB of outputs went through; what the process held at any time (garbage included) stayed far
    // below that: the generator is pulled lazily and results leave in bounded batches.
    expect(harness.outputBytes).toBeGreaterThan(400_000_000);
    expect(rssPeak - rssBefore).toBeLessThan(160 * 1024 * 1024);
    expect(maxBatch).toBeLessThan(2 * 1024 * 1024);
    // The one input's sub-items were shared: both workers ran a real part of them.
    expect(perWorker.reduce((a, b) => a + b, 0)).toBe(100_000);
    for (const count of perWorker) expect(count).toBeGreaterThan(30_000);
  }, 90_000);

  test("a 50 MB item passes through in both directions", async () => {
    const harness = await EngineHarness.start(dir, [{ export: "identity" }], {
      workers: 2,
      inputRingBytes: 1 << 16,
      outputRingBytes: 1 << 16,
    });
    try {
      const item = new Uint8Array(50 * 1024 * 1024);
      for (let i = 0; i < item.length; i += 4096) item[i] = (i >>> 12) & 255;
      harness.feed([item, "small"]);
      await harness.waitEmpty();
      const values = harness.values();
      const back = values.find((v) => v instanceof Uint8Array) as Uint8Array;
      expect(back.length).toBe(item.length);
      expect(Buffer.from(back).equals(Buffer.from(item))).toBe(true);
      expect(values).toContain("small");
    } finally {
      await harness.engine.reset();
    }
    const made = await EngineHarness.start(dir, [{ export: "big" }, { export: "checksum" }], {
      workers: 1,
      inputRingBytes: 1 << 16,
      outputRingBytes: 1 << 16,
    });
    try {
      made.feed([50 * 1024 * 1024]);
      await made.waitEmpty();
      let s = 0;
      for (let i = 0; i < 50 * 1024 * 1024; i += 4096) s += (i >>> 12) & 255;
      expect(made.values()).toEqual([{ length: 50 * 1024 * 1024, s }]);
    } finally {
      await made.engine.reset();
    }
  }, 60_000);

  test("a feeder that awaits room waits while the rings are full: the backlog never holds more than one batch", async () => {
    const harness = await EngineHarness.start(dir, [{ export: "identity" }], {
      workers: 2,
      inputRingBytes: 1 << 16,
      outputRingBytes: 1 << 16,
    });
    harness.keepOutputs = false;
    const batches = 400;
    const perBatch = 500;
    const batch = Array.from({ length: perBatch }, (_, i) => ({ i, payload: "x".repeat(64) }));
    const batchBytes = batch.reduce((sum, item) => sum + RECORD_HEADER_BYTES + encode(item).length, 0);
    let fed = 0;
    let maxBacklog = 0;
    const feeder = (async () => {
      for (; fed < batches; fed++) {
        await harness.engine.whenRoom();
        harness.feed(batch);
        maxBacklog = Math.max(maxBacklog, harness.engine.backlogBytes);
      }
    })();
    try {
      harness.engine.pauseOutput();
      await Bun.sleep(300);
      const stalledAt = fed;
      await Bun.sleep(300);
      // Nothing is read: the output rings filled, the workers stopped, the input rings filled, and the
      // feeder waits, one batch out at most.
      expect(fed).toBe(stalledAt);
      expect(fed).toBeLessThan(batches);
      expect(harness.outputCount).toBe(0);
      harness.engine.resumeOutput();
      await feeder;
      await harness.waitEmpty(60_000);
      expect(harness.outputCount).toBe(batches * perBatch);
      expect(maxBacklog).toBeGreaterThan(0); // it did wait for room at times
      expect(maxBacklog).toBeLessThanOrEqual(batchBytes);
    } finally {
      await harness.engine.reset();
    }
  }, 60_000);

  test("a slow consumer stops the workers instead of growing memory, and nothing is lost", async () => {
    const harness = await EngineHarness.start(dir, [{ export: "fanOut", isGenerator: true }, { export: "identity" }], {
      workers: 2,
      outputRingBytes: 1 << 16,
    });
    harness.keepOutputs = false;
    try {
      harness.engine.pauseOutput();
      harness.feed([200_000]);
      await Bun.sleep(300);
      const stats1 = harness.engine.stats();
      await Bun.sleep(300);
      const stats2 = harness.engine.stats();
      // The workers filled their small output rings and stopped: no progress while paused.
      expect(stats2[1]!.processed).toBe(stats1[1]!.processed);
      expect(stats2[1]!.processed).toBeLessThan(50_000);
      expect(harness.outputCount).toBe(0);
      // A consumer that reads in bursts.
      const drip = setInterval(() => {
        harness.engine.resumeOutput();
        setTimeout(() => harness.engine.pauseOutput(), 2);
      }, 10);
      await Bun.sleep(200);
      clearInterval(drip);
      await Bun.sleep(20); // let the last burst's pause pass before resuming for good
      harness.engine.resumeOutput();
      await harness.waitEmpty(60_000);
      expect(harness.outputCount).toBe(200_000);
    } finally {
      await harness.engine.reset();
    }
  }, 90_000);
});

describe("lifecycle", () => {
  test("sleep pauses workers after their current item, wakeup resumes, idle and empty resolve", async () => {
    const harness = await EngineHarness.start(dir, [{ export: "cpu" }], { workers: 2 });
    try {
      expect(harness.engine.idleWorkers).toBe(2);
      await harness.engine.whenIdle();
      await harness.engine.sleep();
      expect(harness.engine.isAsleep).toBe(true);
      harness.feed(Array.from({ length: 20 }, (_, i) => i));
      await Bun.sleep(200);
      expect(harness.outputCount).toBe(0);
      expect(harness.engine.inFlight).toBe(20);
      harness.engine.wakeup();
      await harness.waitEmpty();
      expect(harness.outputCount).toBe(20);
      await harness.engine.whenIdle();
      // Sleep while busy: each worker finishes the item it is on, then stops.
      harness.feed(Array.from({ length: 200 }, (_, i) => i));
      await Bun.sleep(20);
      await harness.engine.sleep();
      const frozen = harness.outputCount;
      await Bun.sleep(100);
      expect(harness.outputCount).toBe(frozen);
      expect(frozen).toBeLessThan(200);
      harness.engine.wakeup();
      await harness.waitEmpty();
      expect(harness.outputCount).toBe(220);
    } finally {
      await harness.engine.reset();
    }
    await expect(harness.engine.whenEmpty()).rejects.toThrow(/reset/);
    expect(() => harness.feed([1])).toThrow(/reset/);
  });

  test("sleep() always reaches idle workers: 300 sleep and wakeup cycles, none lost", async () => {
    // An idle worker waits on its input ring with no timeout: a nudge lost between its last look at the
    // control word and its wait would leave sleep() pending for good, and this test would time out.
    const harness = await EngineHarness.start(dir, [{ export: "identity" }], { workers: 2 });
    try {
      for (let cycle = 0; cycle < 300; cycle++) {
        await harness.engine.whenIdle();
        await harness.engine.sleep();
        expect(harness.engine.isAsleep).toBe(true);
        harness.engine.wakeup();
        if (cycle % 50 === 0) {
          harness.feed([cycle]);
          await harness.waitEmpty();
        }
      }
      expect(harness.outputCount).toBe(6);
    } finally {
      await harness.engine.reset();
    }
  }, 20_000);

  test("after reset a new engine can be set up; a process that reset (or whose setup failed) exits by itself", async () => {
    const child = spawnBun([join(import.meta.dir, "../support/engine-exit.ts"), dir]);
    const code = await child.waitExit(20_000);
    expect(child.stdout).toContain("outputs 1000");
    expect(child.stdout).toContain("second setup outputs 10");
    expect(child.stdout).toContain(
      'third setup: task 2 ("tasks#noSuchTask"): package "tasks" has no export "noSuchTask"',
    );
    expect(code).toBe(0);
  }, 30_000);
});

describe("dying workers", () => {
  test("a worker that exits is replaced; its item is retried, then reported failed; nothing else is lost or doubled", async () => {
    const harness = await EngineHarness.start(dir, [{ export: "exitOn" }], { workers: 2, maxAttempts: 3 });
    try {
      const items = Array.from({ length: 300 }, (_, i) => (i === 150 ? "die" : i));
      const ids = harness.feed(items);
      await harness.waitEmpty();
      const failed = expectAllDoneButFailed(harness, items, ids, (item) => item === "die");
      expect(failed.length).toBe(1);
      expect(failed[0]!.id).toBe(ids[150]!);
      expect(failed[0]!.message).toContain("gave up after 3 attempts");
      expect(failed[0]!.message).toContain("exited with code 3");
      expect(harness.deaths).toEqual(Array(3).fill("worker exited with code 3"));
      await expectReplacementsWork(harness);
    } finally {
      await harness.engine.reset();
    }
  }, 60_000);

  test("an asynchronous throw outside the task takes the worker down; the item is retried and others go on", async () => {
    const harness = await EngineHarness.start(dir, [{ export: "throwLaterOn" }], { workers: 2, maxAttempts: 2 });
    try {
      const ids = harness.feed(["a", "boom", "b", "c"]);
      await harness.waitEmpty();
      expect(sorted(harness.values())).toEqual(["a", "b", "c"]);
      const failed = harness.errors.filter((e) => e.kind === "failed");
      expect(failed.map((e) => e.id)).toEqual([ids[1]!]);
      expect(failed[0]!.message).toContain("async boom");
    } finally {
      await harness.engine.reset();
    }
  }, 60_000);

  test("a task that runs away with memory costs its worker, not the process: ended at the limit, retried, then given up", async () => {
    Bun.gc(true);
    const limit = process.memoryUsage.rss() + 300 * 1024 * 1024;
    const harness = await EngineHarness.start(dir, [{ export: "hog" }], {
      workers: 2,
      maxAttempts: 2,
      memoryLimitBytes: limit,
    });
    try {
      const items = Array.from({ length: 2000 }, (_, i) => (i === 1000 ? "hog" : i));
      const ids = harness.feed(items);
      await harness.waitEmpty(60_000);
      const failed = expectAllDoneButFailed(harness, items, ids, (item) => item === "hog");
      expect(harness.deaths.length).toBe(2);
      expect(harness.engine.workersReplaced).toBe(2);
      for (const reason of harness.deaths)
        expect(reason).toMatch(/^the node's memory reached \d+ MB, over its limit of \d+ MB/);
      expect(failed.map((e) => [e.id, e.task])).toEqual([[ids[1000]!, "hog"]]);
      expect(failed[0]!.message).toContain("gave up after 2 attempts");
      expect(failed[0]!.message).toContain("over its limit");
      // The ended workers' memory went back to the system, and their replacements work.
      expect(await waitFor(() => process.memoryUsage.rss() < limit, 5000)).toBe(true);
      await expectReplacementsWork(harness);
    } finally {
      await harness.engine.reset();
    }
  }, 60_000);

  test("a task that gets stuck (endless loop, promise that never settles) is ended at the task timeout; the rest is done", async () => {
    const harness = await EngineHarness.start(dir, [{ export: "stuckOn" }], {
      workers: 2,
      maxAttempts: 2,
      taskTimeoutMs: 500,
    });
    try {
      const items = Array.from({ length: 1000 }, (_, i) => (i === 300 ? "loop" : i === 600 ? "wait" : i));
      const ids = harness.feed(items);
      await harness.waitEmpty(30_000);
      const failed = expectAllDoneButFailed(harness, items, ids, (item) => typeof item !== "number");
      expect(failed.map((e) => e.id).sort((a, b) => a - b)).toEqual([ids[300]!, ids[600]!]);
      for (const error of failed) {
        expect(error.message).toBe(
          "gave up after 2 attempts, each of which took its worker down: its task got nothing done for 500 ms, the task timeout (setup's taskTimeoutMs)",
        );
      }
      expect(harness.deaths.length).toBe(4);
    } finally {
      await harness.engine.reset();
    }
  }, 60_000);

  test("workers held by a paused consumer are not stuck: the task timeout spares them", async () => {
    const harness = await EngineHarness.start(dir, [{ export: "fanOut", isGenerator: true }, { export: "identity" }], {
      workers: 2,
      outputRingBytes: 1 << 16,
      taskTimeoutMs: 300,
    });
    harness.keepOutputs = false;
    try {
      harness.engine.pauseOutput();
      harness.feed([50_000, 50_000]);
      await Bun.sleep(1200); // four timeouts with full output rings and nothing read
      harness.engine.resumeOutput();
      await harness.waitEmpty(30_000);
      expect(harness.outputCount).toBe(100_000);
      expect(harness.deaths).toEqual([]);
    } finally {
      await harness.engine.reset();
    }
  }, 60_000);

  test("an item whose worker died once succeeds on its retry, exactly once", async () => {
    const marker = join(dir, `marker-${Date.now()}`);
    const harness = await EngineHarness.start(dir, [{ export: "dieOnce" }], { workers: 2 });
    try {
      const items = Array.from({ length: 50 }, (_, i) => ({ value: i, flaky: i === 25, marker }));
      harness.feed(items);
      await harness.waitEmpty();
      expect(sorted(harness.values())).toEqual(sorted(items.map((i) => i.value)));
      expect(harness.errors).toEqual([]);
    } finally {
      await harness.engine.reset();
    }
  }, 60_000);
});

/**
 * Checks that every item came back once except the `poison` ones, and that every item, poison too, is
 * done; returns the reports of the items given up.
 */
function expectAllDoneButFailed(
  harness: EngineHarness,
  items: unknown[],
  ids: number[],
  poison: (item: unknown) => boolean,
): ErrorRecord[] {
  expect(sorted(harness.values())).toEqual(sorted(items.filter((item) => !poison(item))));
  expect(harness.done.sort((a, b) => a - b)).toEqual(ids);
  return harness.errors.filter((error) => error.kind === "failed");
}

/** The engine still works with its replacement workers. */
async function expectReplacementsWork(harness: EngineHarness): Promise<void> {
  const before = harness.outputCount;
  harness.feed([1, 2, 3]);
  await harness.waitEmpty();
  expect(harness.outputCount).toBe(before + 3);
}

/** Polls `condition` until it holds or `timeoutMs` passes; says whether it held. */
async function waitFor(condition: () => boolean, timeoutMs: number): Promise<boolean> {
  for (const end = performance.now() + timeoutMs; !condition(); await Bun.sleep(20)) {
    if (performance.now() > end) return false;
  }
  return true;
}

const sorted = (values: unknown[]) => [...values].sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1));
