import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EngineHarness, type ErrorRecord, removeDir } from "../support/engine.ts";
import { waitFor } from "../support/wait.ts";

/** The tasks these tests run (a typed package of their own). */
const dir = join(import.meta.dir, "../fixtures/flow-tasks");
/** For the marker files of `dieOnce`. */
const scratch = mkdtempSync(join(tmpdir(), "pcluster-engine-flow-"));
afterAll(() => removeDir(scratch));

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

  test("workers that die again and again (every tenth item): each other item is done once, none is lost", async () => {
    // The replacement reruns what its predecessor finished without committing; an item given up in
    // between once made the next death take those for finished, and they were never run again.
    for (const [workers, maxAttempts] of [
      [1, 1],
      [2, 1],
      [1, 3],
    ] as const) {
      const harness = await EngineHarness.start(dir, [{ export: "exitOn" }], { workers, maxAttempts });
      try {
        const items = Array.from({ length: 60 }, (_, i) => (i % 10 === 9 ? "die" : i));
        const ids = harness.feed(items);
        await harness.waitEmpty();
        const failed = expectAllDoneButFailed(harness, items, ids, (item) => item === "die");
        expect(failed.map((error) => error.id).sort((a, b) => a - b)).toEqual(ids.filter((_, i) => i % 10 === 9));
        expect(harness.deaths).toHaveLength(6 * maxAttempts);
      } finally {
        await harness.engine.reset();
      }
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
    const limit = process.memoryUsage.rss() + 200 * 1024 * 1024;
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
    // Long enough that a worker starved of the CPU on a loaded machine is not taken for stuck once it
    // runs again (at 300 ms one was, after the resume).
    const taskTimeoutMs = 1000;
    const harness = await EngineHarness.start(dir, [{ export: "fanOut", isGenerator: true }, { export: "identity" }], {
      workers: 2,
      outputRingBytes: 1 << 16,
      taskTimeoutMs,
    });
    harness.keepOutputs = false;
    try {
      harness.engine.pauseOutput();
      harness.feed([50_000, 50_000]);
      // One item a worker (two items to two idle workers go one each), each held by its full output ring.
      const held = await waitFor(() => harness.engine.heldWorkers, {
        what: "both workers held by their full output rings",
        until: (n) => n === 2,
      });
      // The time under test: four task timeouts, counted from when the workers are held (the guard
      // looks every 50 ms). They stay held, and alive, all along.
      const heldUntil = performance.now() + 4 * taskTimeoutMs;
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
