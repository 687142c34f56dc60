import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { Root } from "../../src/index.ts";
import * as tasks from "../fixtures/tasks/index.ts";
import { type RunningNode, startNode } from "../support/nodes.ts";
import { waitFor } from "../support/wait.ts";
import { REPO, killAll } from "../support/processes.ts";

/**
 * Leaving a `for await` over `process()` early, or aborting `run()`/`process()` with a signal, stops
 * reading the input and leaves the root ready for the next call (it used to hang every later call).
 */

const TASKS = join(REPO, "test/fixtures/tasks");
let nodes: RunningNode[];
let cluster: Root;

beforeAll(async () => {
  nodes = await Promise.all([startNode({ workers: 1 }), startNode({ workers: 1 })]);
  cluster = new Root(nodes.map((node) => node.addr));
});

afterAll(async () => {
  await cluster?.close();
  await killAll();
});

/** Counts how many items were taken from it. */
function* counted(limit: number, taken: { count: number }): Generator<number> {
  for (let i = 0; i < limit; i++) {
    taken.count++;
    yield i;
  }
}

describe("leaving process() early", () => {
  test("break after 10 of 50 000 outputs: the input stops, then a second process() gives exactly its own outputs", async () => {
    await cluster.setup("early", "1", [{ function: tasks.double }], { localPackages: [TASKS] });
    const taken = { count: 0 };
    let seen = 0;
    for await (const _ of cluster.process(counted(50_000, taken))) {
      if (++seen === 10) break;
    }
    expect(seen).toBe(10);
    // The iterable was not read to its end: feeding stopped at the break (at most a queue bound's worth
    // went in before it).
    const takenAtBreak = taken.count;
    expect(takenAtBreak).toBeLessThan(50_000);

    const second: number[] = [];
    for await (const output of cluster.process([1000, 2000, 3000])) second.push(output as number);
    expect(second.sort((a, b) => a - b)).toEqual([2000, 4000, 6000]);
    expect(taken.count).toBe(takenAtBreak); // nothing more was read from the first iterable

    await cluster.waitEmpty();
    await cluster.run([1, 2, 3]);
    expect(cluster.progress.queued).toBe(0);
    expect(cluster.progress.inFlight).toBe(0);
  }, 60_000);

  test("a throw inside the loop propagates, closes the input, and leaves the root ready", async () => {
    await cluster.setup("early-throw", "1", [{ function: tasks.double }], { localPackages: [TASKS] });
    let closed = false;
    async function* source() {
      try {
        for (let i = 0; i < 100_000; i++) yield i;
      } finally {
        closed = true;
      }
    }
    const thrown = await (async () => {
      for await (const _ of cluster.process(source())) throw new Error("consumer gave up");
    })().catch((error: Error) => error);
    expect((thrown as Error).message).toBe("consumer gave up");
    await cluster.waitEmpty();
    expect(closed).toBe(true);
    const outputs: unknown[] = [];
    for await (const output of cluster.process([21])) outputs.push(output);
    expect(outputs).toEqual([42]);
  }, 60_000);

  test("aborting process()'s signal makes the loop throw its reason at its next step and stops the input", async () => {
    await cluster.setup("early-abort", "1", [{ function: tasks.double }], { localPackages: [TASKS] });
    const controller = new AbortController();
    const taken = { count: 0 };
    let seen = 0;
    const thrown = await (async () => {
      for await (const _ of cluster.process(counted(1_000_000, taken), { signal: controller.signal })) {
        if (++seen < 100) continue;
        // Outputs wait for the loop (they reached the root, it has not taken them): the abort does not
        // hand them out first.
        await waitFor(() => cluster.progress.outputs, { what: "outputs waiting for the loop", until: (n) => n >= 300 });
        controller.abort(new Error("enough"));
      }
    })().catch((error: Error) => error);
    expect((thrown as Error).message).toBe("enough");
    expect(seen).toBe(100);
    expect(taken.count).toBeLessThan(1_000_000);
    const outputs: unknown[] = [];
    for await (const output of cluster.process([5])) outputs.push(output);
    expect(outputs).toEqual([10]);
  }, 60_000);
});

describe("aborting run()", () => {
  test("rejects with the signal's reason, reads no more input, and what was fed still finishes", async () => {
    let handled = 0;
    await cluster.setup("abort-run", "1", [{ function: tasks.sleepy }], {
      localPackages: [TASKS],
      outputHandler: () => {
        handled++;
      },
    });
    const controller = new AbortController();
    let taken = 0;
    function* slowItems() {
      for (let id = 0; id < 100_000; id++) {
        taken++;
        if (taken === 50) controller.abort(new Error("stop feeding"));
        yield { id, ms: 1 };
      }
    }
    const thrown = await cluster.run(slowItems(), { signal: controller.signal }).catch((error: Error) => error);
    expect((thrown as Error).message).toBe("stop feeding");
    const takenAtAbort = taken;
    expect(takenAtAbort).toBeLessThan(100_000);
    await cluster.waitEmpty();
    expect(taken).toBe(takenAtAbort);
    expect(handled).toBe(cluster.progress.fed); // every item fed before the abort finished and was handled
    const already = new AbortController();
    already.abort(new Error("aborted before"));
    expect(((await cluster.run([1], { signal: already.signal }).catch((e: Error) => e)) as Error).message).toBe(
      "aborted before",
    );
  }, 60_000);
});
