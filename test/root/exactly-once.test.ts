import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Root, type TaskError } from "../../src/index.ts";
import * as tasks from "../fixtures/exactly-once/index.ts";
import { type RunningNode, startNode } from "../support/nodes.ts";
import { REPO, killAll } from "../support/processes.ts";
import { within } from "../support/wait.ts";

/**
 * Exactly-once delivery with real node processes: an item's outputs reach the output handler once
 * whatever dies — a node killed or frozen mid-run, a worker that dies in the middle of a fan-out — and
 * `delivery: "at-least-once"` still streams outputs before their item is done.
 */

const TASKS = join(REPO, "test/fixtures/exactly-once");
const roots: Root[] = [];
const dirs: string[] = [];
const stopped: RunningNode[] = [];

afterEach(async () => {
  for (const node of stopped.splice(0)) node.proc.kill("SIGCONT");
  await Promise.all(roots.splice(0).map((root) => root.close().catch(() => {})));
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

afterAll(async () => {
  await killAll();
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "pcluster-exactly-once-"));
  dirs.push(dir);
  return dir;
}

/** Bounds a promise (a test must fail, not hang). */
/**
 * A root over one fresh node of `workers` workers, set up with `chain` from the exactly-once tasks: the
 * last task's `i` of each output it hands out, and the task errors it reports.
 */
async function oneNodeRun(
  workers: number,
  name: string,
  chain: Parameters<Root["setup"]>[2],
  options: { maxHeldBytes?: number } = {},
): Promise<{ cluster: Root; seen: number[]; errors: TaskError[] }> {
  const node = await startNode({ workers });
  const cluster = new Root([node.addr]);
  roots.push(cluster);
  const seen: number[] = [];
  const errors: TaskError[] = [];
  await cluster.setup(name, "1", chain, {
    ...options,
    localPackages: [TASKS],
    outputHandler: (output) => void seen.push((output as { i: number }).i),
    errorHandler: (error) => void errors.push(error),
  });
  return { cluster, seen, errors };
}

/** A fixed corpus: lines of made-up words (some shorter than 3 letters, which do not count). */
function corpus(lines: number): string[] {
  const syllables = ["ka", "lo", "mir", "te", "x", "sun", "ba", "qu", "e", "ron"];
  let seed = 12345;
  const next = () => (seed = (seed * 1103515245 + 12345) % 2147483648);
  return Array.from({ length: lines }, () => {
    const words = Array.from({ length: 3 + (next() % 9) }, () => {
      let word = "";
      for (let parts = 1 + (next() % 3); parts > 0; parts--) word += syllables[next() % syllables.length];
      return word;
    });
    return words.join(next() % 2 === 0 ? " " : ", ");
  });
}

describe("exactly-once outputs", () => {
  test("word counts are exact on 4 nodes with one SIGKILLed and one SIGSTOPped mid-run", async () => {
    const nodes = await Promise.all(Array.from({ length: 4 }, () => startNode({ workers: 1 })));
    const [killed, frozen] = nodes as [RunningNode, RunningNode];
    const cluster = new Root(
      nodes.map((node) => node.addr),
      { heartbeatMs: 100, heartbeatTimeoutMs: 1500, rejoinTimeoutMs: 0 },
    );
    roots.push(cluster);
    const lines = corpus(3000);
    const expected = lines.reduce((sum, line) => sum + tasks.wordsOf(line).length, 0);
    let total = 0;
    let outputs = 0;
    let struck = false;
    await cluster.setup("exact-words", "1", [{ function: tasks.wordOnes, isGenerator: true }], {
      localPackages: [TASKS],
      outputHandler: (one) => {
        total += one as number;
        // A third of the way in, one node dies and another freezes, both with items in flight.
        if (!struck && ++outputs >= expected / 3) {
          struck = true;
          killed.proc.kill("SIGKILL");
          stopped.push(frozen);
          frozen.proc.kill("SIGSTOP");
        }
      },
    });
    cluster.feed(...lines.map((text) => ({ text, ms: 1 })));
    await within(cluster.waitEmpty(), 45_000, "waitEmpty with a node killed and one frozen");

    expect(struck).toBe(true);
    const progress = cluster.progress;
    expect(progress.resent).toBeGreaterThan(0); // both had items in flight: they ran again elsewhere
    expect(total).toBe(expected);
    expect(progress).toMatchObject({
      fed: lines.length,
      done: lines.length,
      outputs: expected,
      queued: 0,
      inFlight: 0,
    });
    expect(cluster.nodes.sort()).toEqual(
      nodes
        .slice(2)
        .map((node) => node.addr)
        .sort(),
    );
  }, 60_000);

  test("a worker that dies mid-fan-out: each output of the generator item arrives once", async () => {
    const { cluster, seen, errors } = await oneNodeRun(2, "die-mid-fan-out", [
      { function: tasks.dieOnThird, isGenerator: true },
    ]);
    const marker = join(tempDir(), "died");
    cluster.feed({ n: 6, marker });
    await within(cluster.waitEmpty(), 20_000, "waitEmpty after a worker died");

    expect(existsSync(marker)).toBe(true); // the first attempt did die on its third output
    const status = await cluster.status();
    expect(status[0]!.pipeline!.workersReplaced).toBe(1);
    expect(seen.sort()).toEqual([0, 1, 2, 3, 4, 5]);
    expect(errors).toEqual([]);
  }, 30_000);

  test("a worker that dies after a task error: the error is reported once, each output once", async () => {
    const { cluster, seen, errors } = await oneNodeRun(2, "error-then-die", [
      { function: tasks.numbersThenDie, isGenerator: true },
      { function: tasks.failOnOne },
    ]);
    const marker = join(tempDir(), "died");
    cluster.feed({ n: 5, marker });
    await within(cluster.waitEmpty(), 20_000, "waitEmpty after a worker died");

    expect(existsSync(marker)).toBe(true); // the first attempt did die after its task error
    const status = await cluster.status();
    expect(status[0]!.pipeline!.workersReplaced).toBe(1);
    expect(seen.sort()).toEqual([0, 2, 3, 4]);
    expect(errors.map((error) => error.task)).toEqual(["failOnOne"]);
    expect(errors[0]!.message).toContain("one is refused");
  }, 30_000);

  test("outputs past maxHeldBytes: the item is reported as a TaskError naming the limit", async () => {
    // The item gives 40 outputs of 32 KiB: they cannot all be held.
    const { cluster, seen, errors } = await oneNodeRun(
      1,
      "held-too-much",
      [{ function: tasks.dieOnThird, isGenerator: true }],
      { maxHeldBytes: 100 * 1024 },
    );
    const marker = join(tempDir(), "died");
    writeFileSync(marker, "no dying here"); // every attempt gives all its outputs
    cluster.feed({ n: 40, marker });
    await within(cluster.waitEmpty(), 20_000, "waitEmpty");

    expect(errors).toHaveLength(1);
    expect(errors[0]!.message).toContain("maxHeldBytes");
    expect(errors[0]!.message).toContain(String(100 * 1024));
    expect(seen).toEqual([]); // none of its outputs, rather than some of them
  }, 30_000);
});

describe("at-least-once outputs", () => {
  test("stream out before their item is done", async () => {
    const node = await startNode({ workers: 1 });
    const cluster = new Root([node.addr]);
    roots.push(cluster);
    const seenFile = join(tempDir(), "seen");
    const outputs: Array<{ i: number; sawRoot?: boolean }> = [];
    await cluster.setup("streaming", "1", [{ function: tasks.streamThenWait, isGenerator: true }], {
      localPackages: [TASKS],
      delivery: "at-least-once",
      outputHandler: (output) => {
        const value = output as { i: number; sawRoot?: boolean };
        if (value.i === 0) writeFileSync(seenFile, "output 0 reached the root");
        outputs.push({ i: value.i, sawRoot: value.sawRoot });
      },
    });
    cluster.feed({ seen: seenFile, waitMs: 10_000 });
    await within(cluster.waitEmpty(), 20_000, "waitEmpty");
    expect(outputs).toEqual([
      { i: 0, sawRoot: undefined },
      { i: 1, sawRoot: true },
    ]);
  }, 30_000);

  test("exactly-once holds the same item's first output until it is done", async () => {
    const node = await startNode({ workers: 1 });
    const cluster = new Root([node.addr]);
    roots.push(cluster);
    const seenFile = join(tempDir(), "seen");
    const outputs: Array<{ i: number; sawRoot?: boolean }> = [];
    await cluster.setup("held", "1", [{ function: tasks.streamThenWait, isGenerator: true }], {
      localPackages: [TASKS],
      outputHandler: (output) => {
        const value = output as { i: number; sawRoot?: boolean };
        if (value.i === 0) writeFileSync(seenFile, "output 0 reached the root");
        outputs.push({ i: value.i, sawRoot: value.sawRoot });
      },
    });
    cluster.feed({ seen: seenFile, waitMs: 1500 }); // it never sees the file
    await within(cluster.waitEmpty(), 20_000, "waitEmpty");
    expect(outputs).toEqual([
      { i: 0, sawRoot: undefined },
      { i: 1, sawRoot: false },
    ]);
  }, 30_000);
});
