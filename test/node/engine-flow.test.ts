import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EngineHarness, type ErrorRecord, removeDir } from "../support/engine.ts";
import { spawnBun } from "../support/processes.ts";
import { encode } from "../../src/protocol/codec.ts";
import { RECORD_HEADER_BYTES } from "../../src/protocol/record.ts";
import { waitFor } from "../support/wait.ts";

/** The tasks these tests run (a typed package of their own). */
const dir = join(import.meta.dir, "../fixtures/flow-tasks");
/** For the marker files of `dieOnce`. */
const scratch = mkdtempSync(join(tmpdir(), "pcluster-engine-flow-"));
afterAll(() => removeDir(scratch));

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

  test("an item 256 times the ring (16 MB) passes through in both directions", async () => {
    const size = 16 * 1024 * 1024; // far past the ring (64 KiB) and its largest record (16 KiB)
    const harness = await EngineHarness.start(dir, [{ export: "identity" }], {
      workers: 2,
      inputRingBytes: 1 << 16,
      outputRingBytes: 1 << 16,
    });
    try {
      const item = new Uint8Array(size);
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
      made.feed([size]);
      await made.waitEmpty();
      let s = 0;
      for (let i = 0; i < size; i += 4096) s += (i >>> 12) & 255;
      expect(made.values()).toEqual([{ length: size, s }]);
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
    const batches = 100;
    const perBatch = 500;
    const batch = Array.from({ length: perBatch }, (_, i) => ({ i, payload: "x".repeat(64) }));
    const sizes = batch.map((item) => RECORD_HEADER_BYTES + encode(item).length);
    const batchBytes = sizes.reduce((sum, size) => sum + size, 0);
    /** How many records of the batch a backlog of `bytes` holds (what waits is always a batch's tail). */
    const recordsIn = (bytes: number) => {
      let count = 0;
      for (let at = sizes.length - 1; bytes > 0; at--, count++) bytes -= sizes[at]!;
      return count;
    };
    let fed = 0;
    let maxBacklog = 0;
    let awaitingRoom = false;
    const feeder = (async () => {
      for (; fed < batches; fed++) {
        awaitingRoom = true;
        await harness.engine.whenRoom();
        awaitingRoom = false;
        harness.feed(batch);
        maxBacklog = Math.max(maxBacklog, harness.engine.backlogBytes);
      }
    })();
    try {
      harness.engine.pauseOutput();
      // Nothing is read, so nothing is Done: the workers run what they were given and no more comes
      // to them, and the feeder waits for room, one batch out at most.
      const state = () => {
        const backlog = harness.engine.backlogBytes;
        const given = fed * perBatch - recordsIn(backlog);
        return { awaitingRoom, backlog, fed, given, ran: harness.engine.stats()[0]!.processed };
      };
      const stalled = await waitFor(state, {
        what: "the workers to run all they were given while the feeder waits for room",
        until: (now) => now.awaitingRoom && now.backlog > 0 && now.ran === now.given,
      });
      expect(stalled.given).toBeGreaterThan(0);
      expect(harness.engine.inFlight).toBe(fed * perBatch); // none Done
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
      // The worker on the generator fills its small output ring and is held there: no progress while
      // paused (the sub-items it would share with the other go out through that ring too).
      await waitFor(() => harness.engine.heldWorkers, {
        what: "the generator's worker held by its full output ring",
        until: (held) => held >= 1,
      });
      expect(harness.engine.stats()[1]!.processed).toBeLessThan(50_000);
      expect(harness.outputCount).toBe(0);
      // A consumer that reads in bursts: each lets some results out, then holds the workers again.
      for (let burst = 0; burst < 10; burst++) {
        const before = harness.outputCount;
        harness.engine.resumeOutput();
        await waitFor(() => harness.outputCount, {
          what: `results of burst ${burst}`,
          until: (count) => count > before,
        });
        harness.engine.pauseOutput();
      }
      expect(harness.outputCount).toBeLessThan(200_000);
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
      // Every worker said it is parked (the engine's count of idle workers leaves out sleeping ones):
      // the items wait in the rings, none has run.
      await harness.engine.whenAsleep();
      expect(harness.engine.idleWorkers).toBe(0);
      expect(harness.engine.stats()[0]!.processed).toBe(0);
      expect(harness.outputCount).toBe(0);
      expect(harness.engine.inFlight).toBe(20);
      harness.engine.wakeup();
      await harness.waitEmpty();
      expect(harness.outputCount).toBe(20);
      await harness.engine.whenIdle();
      // Sleep while busy: each worker finishes the item it is on, then stops.
      harness.feed(Array.from({ length: 200 }, (_, i) => i));
      await waitFor(() => harness.engine.stats()[0]!.processed, {
        what: "the workers to start on the 200",
        until: (n) => n > 20,
      });
      await harness.engine.sleep();
      // Once sleep() resolves, what the workers did is handed out and they are parked: what they ran is
      // exactly what came out, and the rest is still in flight.
      const frozen = harness.outputCount;
      expect(harness.engine.stats()[0]!.processed).toBe(frozen);
      expect(harness.engine.inFlight).toBe(220 - frozen);
      expect(frozen).toBeLessThan(220);
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
  }, 60_000);

  test("after reset a new engine can be set up; a process that reset (or whose setup failed) exits by itself", async () => {
    const child = spawnBun([join(import.meta.dir, "../support/engine-exit.ts"), dir]);
    const code = await child.waitExit(20_000);
    expect(child.stdout).toContain("outputs 1000");
    expect(child.stdout).toContain("second setup outputs 10");
    expect(child.stdout).toContain(
      'third setup: task 2 ("tasks#noSuchTask"): package "tasks" has no export "noSuchTask"',
    );
    expect(code).toBe(0);
  }, 60_000);
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
      await waitFor(() => process.memoryUsage.rss(), {
        what: `the process's memory back under ${limit} bytes`,
        until: (rss) => rss < limit,
        timeoutMs: 5000,
      });
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
      const held = await waitFor(() => harness.engine.heldWorkers, {
        what: "a worker held by its full output ring",
        until: (n) => n >= 1,
      });
      // The time under test: four task timeouts, counted from when the workers are held (the guard
      // looks every 50 ms). They stay held, and alive, all along.
      const heldUntil = performance.now() + 4 * 300;
      await waitFor(
        () => ({ held: harness.engine.heldWorkers, deaths: harness.deaths.length, now: performance.now() }),
        {
          what: "four task timeouts to pass with the workers held",
          until: (now) => now.deaths > 0 || now.now >= heldUntil,
        },
      );
      expect(harness.deaths).toEqual([]);
      // Still held: a parked worker looks again every WAKE_CHECK_MS and parks again at once, so the
      // flag may be down for an instant when read; it is up again right after.
      await waitFor(() => harness.engine.heldWorkers, { what: "the workers still held", until: (n) => n === held });
      harness.engine.resumeOutput();
      await harness.waitEmpty(30_000);
      expect(harness.outputCount).toBe(100_000);
      expect(harness.deaths).toEqual([]);
    } finally {
      await harness.engine.reset();
    }
  }, 60_000);

  test("an item whose worker died once succeeds on its retry, exactly once", async () => {
    const marker = join(scratch, "died-once");
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

const sorted = (values: unknown[]) => [...values].sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1));
