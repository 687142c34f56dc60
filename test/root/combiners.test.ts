import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Root, type TaskError } from "../../src/index.ts";
import * as tasks from "../fixtures/exactly-once/index.ts";
import { type RunningNode, startNode } from "../support/nodes.ts";
import { REPO, killAll } from "../support/processes.ts";
import { within } from "../support/wait.ts";

/**
 * Combiners with real node processes: outputs folded in the workers, partials shipped with the Done of
 * the items they cover and merged on the root, give the totals a plain loop gives — also when a node
 * is SIGKILLed or a worker dies mid-run.
 */

const TASKS = join(REPO, "test/fixtures/exactly-once");
const roots: Root[] = [];
const dirs: string[] = [];

afterEach(async () => {
  await Promise.all(roots.splice(0).map((root) => root.close().catch(() => {})));
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

afterAll(async () => {
  await killAll();
});

/** A fixed corpus of made-up words, some shorter than 3 letters (they do not count). */
function corpus(lines: number): string[] {
  const words = [
    "alpha",
    "be",
    "gamma",
    "delta",
    "ox",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "io",
    "kappa",
    "Alpha",
    "constructor",
  ];
  let seed = 7;
  // The high bits: an LCG's low bits repeat in short cycles.
  const next = () => (seed = (seed * 1103515245 + 12345) % 2147483648) >>> 16;
  return Array.from({ length: lines }, () =>
    Array.from({ length: 2 + (next() % 10) }, () => words[next() % words.length]).join(" "),
  );
}

/** The totals a plain loop gives. */
function loopTotals(lines: string[]): Record<string, number> {
  const totals = new Map<string, number>();
  for (const text of lines) {
    for (const [word, count] of Object.entries(tasks.lineCounts({ text })))
      totals.set(word, (totals.get(word) ?? 0) + count);
  }
  return Object.fromEntries(totals);
}

async function cluster(nodes: RunningNode[], options: ConstructorParameters<typeof Root>[1] = {}): Promise<Root> {
  const root = new Root(
    nodes.map((node) => node.addr),
    options,
  );
  roots.push(root);
  return root;
}

describe("combiners", () => {
  test("a combiner class: run() and result() give a plain loop's word totals; outputs never reach outputHandler", async () => {
    const nodes = await Promise.all([startNode({ workers: 2 }), startNode({ workers: 1 })]);
    const root = await cluster(nodes);
    const lines = corpus(5000);
    let outputs = 0;
    await root.setup("word-totals", "1", [{ function: tasks.lineCounts }], {
      localPackages: [TASKS],
      combine: { function: tasks.WordTotals, args: [1] },
      outputHandler: () => void outputs++,
    });
    const total = await within(root.run(lines.map((text) => ({ text }))), 30_000, "run");
    const expected = loopTotals(lines);
    expect(Object.keys(expected).length).toBeGreaterThan(5);
    expect(total).toEqual(expected);
    expect(root.result()).toEqual(expected);
    expect(outputs).toBe(0);
    // Its args reach every instance: the root's too (words seen fewer than 10⁹ times are left out).
    await root.setup("word-totals", "2", [{ function: tasks.lineCounts }], {
      localPackages: [TASKS],
      combine: { function: tasks.WordTotals, args: [1e9] },
    });
    expect(await within(root.run(lines.slice(0, 100).map((text) => ({ text }))), 30_000, "run")).toEqual({});
  }, 60_000);

  test('"sum-by-key" stays exact with a node SIGKILLed mid-run (3 nodes); "count" counts outputs', async () => {
    const nodes = await Promise.all([startNode({ workers: 1 }), startNode({ workers: 1 }), startNode({ workers: 1 })]);
    const root = await cluster(nodes, { rejoinTimeoutMs: 0 });
    const lines = corpus(3000);
    await root.setup("sum-by-key", "1", [{ function: tasks.lineCounts }], {
      localPackages: [TASKS],
      combine: "sum-by-key",
    });
    root.feed(...lines.map((text) => ({ text, ms: 1 })));
    // A third of the way in, the node with the most items in flight dies.
    const deadline = Date.now() + 20_000;
    while (root.progress.done < lines.length / 3 && Date.now() < deadline) await Bun.sleep(10);
    const status = await root.status();
    const busiest = status.reduce((most, node) => (node.pipeline!.inFlight > most.pipeline!.inFlight ? node : most));
    expect(busiest.pipeline!.inFlight).toBeGreaterThan(0);
    const victim = nodes.find((node) => node.addr === busiest.address)!;
    victim.proc.kill("SIGKILL");
    await within(root.waitEmpty(), 45_000, "waitEmpty after a node was killed");
    expect(root.progress.resent).toBeGreaterThan(0);
    expect(root.result()).toEqual(loopTotals(lines));
    // Outputs folded count once each, as their partials arrive: one per line, none twice for the lost node.
    expect(root.progress.outputs).toBe(lines.length);

    await root.setup("count", "1", [{ function: tasks.wordOnes, isGenerator: true }], {
      localPackages: [TASKS],
      combine: "count",
    });
    const words = lines.reduce((sum, text) => sum + tasks.wordsOf(text).length, 0);
    expect(await within(root.run(lines.map((text) => ({ text, ms: 0 }))), 30_000, "run")).toBe(words);
  }, 90_000);

  test('"sum-by-key" with concurrency 8: items finishing out of order still fold into exact totals', async () => {
    const node = await startNode({ workers: 2 });
    const root = await cluster([node]);
    const lines = corpus(2000);
    await root.setup("sum-later", "1", [{ function: tasks.lineCountsLater }], {
      localPackages: [TASKS],
      combine: "sum-by-key",
      concurrency: 8,
    });
    // Waits of 0–3 ms: items of one worker finish in another order than they started.
    const total = await within(root.run(lines.map((text, i) => ({ text, ms: i % 4 }))), 60_000, "run");
    expect(total).toEqual(loopTotals(lines));
  }, 90_000);

  test("a worker that dies mid-item: its partial goes with it, and the item counts once", async () => {
    const node = await startNode({ workers: 2 });
    const root = await cluster([node]);
    const dir = mkdtempSync(join(tmpdir(), "pcluster-combiners-"));
    dirs.push(dir);
    const marker = join(dir, "died");
    const errors: TaskError[] = [];
    await root.setup("count-crash", "1", [{ function: tasks.dieOnThird, isGenerator: true }], {
      localPackages: [TASKS],
      combine: "count",
      errorHandler: (error) => void errors.push(error),
    });
    // Other items finish beside it (their partials ship), the dying one runs again.
    const items = [{ n: 6, marker }, ...Array.from({ length: 20 }, () => ({ n: 2, marker }))];
    expect(await within(root.run(items), 30_000, "run")).toBe(6 + 20 * 2);
    expect(root.progress.outputs).toBe(6 + 20 * 2); // the dying item's outputs before the crash not among them
    expect((await root.status())[0]!.pipeline!.workersReplaced).toBe(1);
    expect(errors).toEqual([]);
  }, 30_000);

  test("an item with a fan-out of many outputs folds them all; a combiner that throws on one is that item's task error", async () => {
    const node = await startNode({ workers: 2 });
    const root = await cluster([node]);
    const errors: TaskError[] = [];
    await root.setup("keyed", "1", [{ function: tasks.keyedOnes, isGenerator: true }], {
      localPackages: [TASKS],
      // @ts-expect-error its outputs hold a string on purpose: the combiner's refusal at run time is tested
      combine: "sum-by-key",
      errorHandler: (error) => void errors.push(error),
    });
    const items = [
      { key: "many", n: 200_000 },
      ...Array.from({ length: 10 }, () => ({ key: "few", n: 3 })),
      { key: "late", n: 1000, badAt: 600 }, // past the outputs an item holds before it folds them
      { key: "early", n: 10, badAt: 5 },
    ];
    // The outputs before the one refused count (as a generator's outputs before it throws are out); none after.
    expect(await within(root.run(items), 60_000, "run")).toEqual({ many: 200_000, few: 30, late: 600, early: 5 });
    expect(errors.map((error) => [error.task, error.message])).toEqual(
      expect.arrayContaining([
        ["combiner sum-by-key", expect.stringContaining('the value of "late" is string one, not a number')],
        ["combiner sum-by-key", expect.stringContaining('the value of "early" is string one, not a number')],
      ]),
    );
    expect(errors.length).toBe(2);
  }, 90_000);

  test("bad combiners are refused at setup, saying what is wrong", async () => {
    const node = await startNode({ workers: 1 });
    const root = await cluster([node]);
    const setup = (combine: unknown) =>
      root.setup("bad", "1", [{ function: tasks.lineCounts }], { localPackages: [TASKS], combine: combine as "count" });
    await expect(setup("sum")).rejects.toThrow(/combine must be "sum-by-key" or "count"/);
    await expect(setup({ function: tasks.lineCounts })).rejects.toThrow(
      /class "lineCounts" has no add\(\), merge\(\), result\(\)/,
    );
    expect(() => root.result()).toThrow(/result\(\) needs a combiner/);
    // With a combiner there are no outputs to yield: process() says so rather than yield nothing.
    await root.setup("counted", "1", [{ function: tasks.lineCounts }], { localPackages: [TASKS], combine: "count" });
    const loop = async () => {
      for await (const _ of root.process([{ text: "a b", ms: 0 }])) throw new Error("an output was yielded");
    };
    await expect(loop()).rejects.toThrow(
      /process\(\) yields outputs, and with setup's combine .* run\(\) resolves to the total/,
    );
    expect(await root.run([{ text: "a b", ms: 0 }])).toBe(1);
  }, 30_000);
});
