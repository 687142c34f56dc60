import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { SetupError } from "../../src/errors.ts";
import { Engine } from "../../src/node/engine/engine.ts";
import { EngineHarness, removeDir, writeTaskPackage } from "../support/engine.ts";
import { waitFor } from "../support/wait.ts";

/** The tasks these tests run (a typed package of their own). */
const dir = join(import.meta.dir, "../fixtures/engine-tasks");

async function run(tasks: Parameters<typeof EngineHarness.start>[1], items: unknown[], workers = 2) {
  const harness = await EngineHarness.start(dir, tasks, { workers });
  try {
    const ids = harness.feed(items);
    await harness.waitEmpty();
    return { harness, ids, stats: harness.engine.stats() };
  } finally {
    await harness.engine.reset();
  }
}

const sorted = (values: unknown[]) => [...values].sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1));

describe("taskchains", () => {
  test("identity: every item comes back once, every id is done once", async () => {
    const items = Array.from({ length: 5000 }, (_, i) => ({ i, payload: "x".repeat(64) }));
    const { harness, ids } = await run([{ export: "identity" }], items);
    expect(sorted(harness.values())).toEqual(sorted(items));
    expect(harness.done.sort((a, b) => a - b)).toEqual(ids);
    for (const output of harness.outputs) expect((output.value as { i: number }).i).toBe(output.id - ids[0]!);
  });

  test("sync and async tasks chain", async () => {
    const { harness } = await run([{ export: "double" }, { export: "slowDouble" }], [1, 2, 3]);
    expect(sorted(harness.values())).toEqual([12, 4, 8]);
  });

  test("null and undefined drop the item, and are counted as drops", async () => {
    const { harness, stats } = await run([{ export: "dropOdd" }, { export: "dropUndefined" }], [0, 1, 2, 3, 4, 5, 6]);
    expect(sorted(harness.values())).toEqual([2, 4]);
    expect(stats[0]).toMatchObject({ task: "dropOdd", processed: 7, dropped: 3 });
    expect(stats[1]).toMatchObject({ task: "dropUndefined", processed: 4, dropped: 2 });
    expect(harness.done.length).toBe(7);
  });

  test("every generator form: array, iterable, generator, async generator, null", async () => {
    const chain = [
      { export: "pair", isGenerator: true },
      { export: "asSet", isGenerator: true },
      { export: "counted", isGenerator: true },
      { export: "asyncCounted", isGenerator: true },
    ];
    const { harness, stats } = await run(chain, [1]);
    // 1 → [1,1] → each {1,1001} → each ×3 → each ×2 = 2*2*3*2 = 24 outputs
    expect(harness.values().length).toBe(24);
    expect(sorted(harness.values())).toContain(10010.1);
    expect(stats.map((s) => s.processed)).toEqual([1, 2, 4, 12]);
    const none = await run([{ export: "nothing", isGenerator: true }], [1, 2]);
    expect(none.harness.values()).toEqual([]);
    expect(none.harness.done.length).toBe(2);
  });

  test("depth-first: an item's sub-items run to the end of the chain before the next input is split", async () => {
    const { harness } = await run(
      [{ export: "splitThree", isGenerator: true }, { export: "order" }],
      ["a", "b", "c"],
      1,
    );
    expect(harness.values()).toEqual([
      { sub: "a.1", seen: 1, splitsSoFar: 1 },
      { sub: "a.2", seen: 2, splitsSoFar: 1 },
      { sub: "a.3", seen: 3, splitsSoFar: 1 },
      { sub: "b.1", seen: 4, splitsSoFar: 2 },
      { sub: "b.2", seen: 5, splitsSoFar: 2 },
      { sub: "b.3", seen: 6, splitsSoFar: 2 },
      { sub: "c.1", seen: 7, splitsSoFar: 3 },
      { sub: "c.2", seen: 8, splitsSoFar: 3 },
      { sub: "c.3", seen: 9, splitsSoFar: 3 },
    ]);
  });

  test("each item's Done says how many outputs it gave, the parts of its fan-out run by other workers included", async () => {
    const harness = await EngineHarness.start(dir, [{ export: "fanOut", isGenerator: true }, { export: "dropOdd" }], {
      workers: 2,
    });
    try {
      const evens = (count: number) => Math.ceil(count / 2); // dropOdd keeps the even ones of 0 … count-1
      // One large fan-out alone: the idle worker gets a share of it, and its Done counts them all. Both
      // workers are idle first (hungry), so the one that takes the item finds the other to share with
      // however late the machine lets that one run.
      await waitFor(() => harness.engine.workersAskingForShares, {
        what: "both workers to wait for input",
        until: (n) => n === 2,
      });
      const [large] = harness.feed([5000]);
      await harness.waitEmpty();
      expect(harness.engine.statsByWorker().map((tasks) => tasks[1]!.processed > 0)).toEqual([true, true]);
      expect(harness.outputsOf.get(large!)).toBe(evens(5000));
      const counts = [0, 3, 10, 2000, 1, 3001];
      const ids = harness.feed(counts);
      await harness.waitEmpty();
      expect(ids.map((id) => harness.outputsOf.get(id))).toEqual(counts.map(evens));
      expect(harness.outputCount).toBe(evens(5000) + counts.map(evens).reduce((a, b) => a + b, 0));
    } finally {
      await harness.engine.reset();
    }
  });

  test("a class is built once per worker with its args and called through process()", async () => {
    const items = Array.from({ length: 400 }, (_, i) => i);
    const { harness } = await run([{ export: "Counter", args: ["n-"] }], items);
    const values = harness.values() as Array<{ label: string; builtInThread: number; instance: number }>;
    expect(values.length).toBe(400);
    expect(values.every((v) => v.builtInThread === 1)).toBe(true);
    expect(new Set(values.map((v) => v.instance)).size).toBe(2);
    expect(sorted(values.map((v) => v.label))).toEqual(sorted(items.map((i) => `n-${i}`)));
  });

  test("a throwing task drops that item, reports task, message, stack and item, and nothing else stops", async () => {
    const items = Array.from({ length: 20 }, (_, i) => i);
    const { harness, ids, stats } = await run([{ export: "failOnSeven" }, { export: "rejectOnFive" }], items);
    expect(sorted(harness.values())).toEqual(sorted(items.filter((i) => i !== 7 && i !== 5)));
    const errors = harness.errors.sort((a, b) => a.id - b.id);
    expect(errors.map((e) => [e.task, e.message, e.id, e.stage, e.kind])).toEqual([
      ["rejectOnFive", "five rejected", ids[5]!, 1, "error"],
      ["failOnSeven", "seven is not allowed", ids[7]!, 0, "error"],
    ]);
    expect(errors[1]!.stack).toContain("failOnSeven");
    expect(stats[0]!.errors).toBe(1);
    expect(harness.done.length).toBe(20);
  });

  test("a generator that breaks half-way keeps its earlier outputs and reports the error", async () => {
    const { harness } = await run([{ export: "breaksHalfway", isGenerator: true }], [1, 2]);
    expect(sorted(harness.values())).toEqual([1, 2]);
    expect(harness.errors.map((e) => e.message)).toEqual(["generator broke", "generator broke"]);
  });

  test("a generator task that returns no iterable is a clear task error", async () => {
    const { harness } = await run([{ export: "notIterable", isGenerator: true }], [1]);
    expect(harness.errors[0]!.message).toContain('task "notIterable" is marked isGenerator but returned number');
  });
});

describe("task time", () => {
  /** Spins `ms` per item, so that the true total is known. */
  const spinning = (count: number, ms: (i: number) => number) =>
    Array.from({ length: count }, (_, i) => ({ ms: ms(i) }));
  const trueTotal = (items: Array<{ ms: number }>) => items.reduce((sum, item) => sum + item.ms, 0);

  test("a slow task is timed on every call: its total is the time it spun", async () => {
    const items = spinning(100, () => 2);
    const { stats } = await run([{ export: "spinMs" }], items);
    expect(stats[0]!.processed).toBe(100);
    // Wall time, so only ever more than the spin on a busy machine: no upper bound (timing belongs in
    // benches). A call left untimed would bring the total under the time spun.
    expect(stats[0]!.totalMs).toBeGreaterThanOrEqual(trueTotal(items));
    expect(stats[0]!.meanMs).toBeGreaterThanOrEqual(2);
    expect(stats[0]!.meanMs).toBeCloseTo(stats[0]!.totalMs / 100, 6);
  });

  test("a fast task is timed on a sample of its calls, and its total is still an estimate of the real one", async () => {
    // 20 000 calls of 5 µs, and one in 50 of 0.2 ms: a true total of about 180 ms.
    const items = spinning(20_000, (i) => (i % 50 === 7 ? 0.2 : 0.005));
    // One worker, so that it has a core of its own: a call preempted half-way would count its wait too.
    const { stats } = await run([{ export: "spinMs" }, { export: "identity" }], items, 1);
    const total = trueTotal(items);
    expect(stats[0]!.totalMs).toBeGreaterThan(total * 0.8);
    expect(stats[0]!.processed).toBe(20_000);
    expect(stats[1]!.processed).toBe(20_000);
    expect(stats[1]!.totalMs).toBeGreaterThan(0);
    // The pass-through costs less than the spin it follows (both wall time: no absolute bound).
    expect(stats[1]!.totalMs).toBeLessThan(stats[0]!.totalMs);
  });
});

describe("setup", () => {
  test("a missing export fails setup, naming the task and what the package exports", async () => {
    const start = EngineHarness.start(dir, [{ export: "identity" }, { export: "noSuchTask" }], { workers: 2 });
    await expect(start).rejects.toBeInstanceOf(SetupError);
    await expect(start).rejects.toThrow(
      /task 2 \("tasks#noSuchTask"\): package "tasks" has no export "noSuchTask" \(its function and class exports: .*identity/,
    );
  });

  test("every worker's own setup error reaches the caller", async () => {
    const moody = writeTaskPackage({
      "index.ts": "throw new Error(`no mood today (${Math.random().toString(36).slice(2)})`);\nexport const x = 1;",
    });
    try {
      const error = await EngineHarness.start(moody, [{ export: "x" }], { workers: 2 }).catch(
        (caught: Error) => caught,
      );
      expect(error).toBeInstanceOf(SetupError);
      const lines = (error as Error).message.split("\n");
      expect(lines[0]).toBe("workers failed to set up:");
      expect(
        lines.slice(1).filter((line) => /importing package "tasks" failed: .*no mood today \(\w+\)/.test(line)).length,
      ).toBe(2);
    } finally {
      removeDir(moody);
    }
  });

  test("a class without process() fails setup", async () => {
    await expect(EngineHarness.start(dir, [{ export: "NoProcess" }], { workers: 1 })).rejects.toThrow(
      /class "NoProcess" has no process\(item\) method/,
    );
  });

  test("a package that cannot be imported fails setup with the import error", async () => {
    const broken = writeTaskPackage({ "index.ts": "export const x = ;" });
    try {
      await expect(EngineHarness.start(broken, [{ export: "x" }], { workers: 1 })).rejects.toThrow(
        /importing package "tasks" failed/,
      );
    } finally {
      removeDir(broken);
    }
  });

  test("an empty taskchain is refused", async () => {
    await expect(Engine.start([], {}, {}, { onResults() {} })).rejects.toThrow(/taskchain is empty/);
  });
});

describe("queues", () => {
  test("a feed meets caps from what the workers measured, though no item ever waited in the backlog", async () => {
    const harness = await EngineHarness.start(dir, [{ export: "blockMs" }], { workers: 2 });
    try {
      // One item of 60 ms a worker: measured, never a backlog (where the drain sizes the queues too).
      harness.feed([{ ms: 60 }, { ms: 60 }]);
      await harness.waitEmpty();
      expect(harness.engine.backlogBytes).toBe(0);
      // Items of 60 ms: a worker queues 2 (however late the engine's thread: 2 × 60 ≥ 12 + 2 × 50 ms),
      // not the 16 of a worker not measured yet. Of 20 fed at once, most wait here for whichever
      // worker is free first, rather than in one worker's queue.
      harness.feed(Array.from({ length: 20 }, () => ({ ms: 60 })));
      expect(harness.engine.backlogBytes).toBeGreaterThan(0);
      await harness.waitEmpty();
      expect(harness.done.length).toBe(22);
    } finally {
      await harness.engine.reset();
    }
  }, 60_000);
});
