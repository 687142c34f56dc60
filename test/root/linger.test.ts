import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Root } from "../../src/index.ts";
import * as tasks from "../fixtures/tasks/index.ts";
import { type RunningNode, startLogServerAt, startNode } from "../support/nodes.ts";
import { REPO, killAll } from "../support/processes.ts";
import { waitUntil } from "../support/wait.ts";

/**
 * Batching in time (the worker's commit linger, the engine's results linger, the root's feed linger)
 * must never hold a slow item's output until a batch fills: each waits a bounded time, and an item with
 * nothing else in flight does not wait at all.
 */
const TASKS = join(REPO, "test/fixtures/tasks");
let dir: string;
let node: RunningNode;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "pcluster-linger-"));
  const logServer = await startLogServerAt(join(dir, "cluster.log"));
  node = await startNode({ logPort: logServer.port, workers: 2 });
}, 30_000);
afterAll(async () => {
  await killAll(); // also removes the node's temp folder
  rmSync(dir, { recursive: true, force: true });
});

async function rootWith(
  task: typeof tasks.block | typeof tasks.gated | typeof tasks.sleepy,
  outputs: Array<{ id: number }>,
): Promise<Root> {
  const root = new Root([["127.0.0.1", node.port]]);
  await root.setup(`linger-${task.name}`, "1", [{ function: task }], {
    localPackages: [TASKS],
    outputHandler: (output) => {
      outputs.push(output as { id: number });
    },
  });
  return root;
}

describe("slow items are not held for a batch", () => {
  test("one 10 ms item among nothing else comes back; so does each of a trickle, one every 50 ms", async () => {
    const outputs: Array<{ id: number }> = [];
    const root = await rootWith(tasks.block, outputs);
    try {
      root.feed({ ms: 10, id: 0 });
      await waitUntil(
        "the lone item's output",
        () => outputs.length,
        (n) => n === 1,
        10_000,
      );
      // A trickle: each item is fed only once the one before came back, so none can wait for company.
      for (let id = 1; id <= 10; id++) {
        root.feed({ ms: 1, id });
        await waitUntil(
          `item ${id} of the trickle`,
          () => outputs.length,
          (n) => n === id + 1,
          10_000,
          5,
        );
        await Bun.sleep(50);
      }
      expect(outputs.map((output) => output.id)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      await root.waitEmpty();
    } finally {
      await root.reset();
    }
  }, 60_000);

  test("a short item's output comes back while a long item still runs on the other worker", async () => {
    const outputs: Array<{ id: number }> = [];
    const root = await rootWith(tasks.gated, outputs);
    // The long item runs until the test opens its gate; the short one finds its gate open.
    const shut = join(dir, "long-item-gate");
    const open = join(dir, "short-item-gate");
    writeFileSync(open, "");
    try {
      root.feed({ gate: shut, id: 1 });
      await waitUntil(
        "the long item running",
        () => root.status(),
        (status) => status[0]?.pipeline?.inFlight === 1 && status[0].pipeline.idleWorkers === 1,
        10_000,
      );
      root.feed({ gate: open, id: 2 });
      await waitUntil(
        "the short item's output",
        () => outputs.length,
        (n) => n >= 1,
        10_000,
        5,
      );
      // The long one is still running (its gate is shut): the short one's output did not wait for it
      // to make a batch.
      expect(outputs.map((output) => output.id)).toEqual([2]);
      writeFileSync(shut, "");
      await root.waitEmpty();
      expect(outputs.map((output) => output.id)).toEqual([2, 1]);
    } finally {
      await root.reset();
    }
  }, 60_000);
});

describe("slow items are not piled up on a node", () => {
  test("its window stays near what keeps its workers busy: a backlog that stands in the node shrinks it", async () => {
    // 2 ms items on 2 workers, each worker's queue holding 12 ms of them: a window sized from round
    // trips alone grew with the queue it made — to 300 items by the end of this run, most of them
    // waiting on the node. Now it moves between about 15 and 45.
    const outputs: Array<{ id: number }> = [];
    const root = await rootWith(tasks.sleepy, outputs);
    try {
      const windows: number[] = [];
      const items = 3000;
      root.feedMany(Array.from({ length: items }, (_, id) => ({ ms: 2, id })));
      await waitUntil(
        "every output",
        () => {
          windows.push(root.observe().nodes[0]!.window);
          return outputs.length;
        },
        (n) => n === items,
        60_000,
      );
      expect(outputs.length).toBe(items);
      // The second half of the run, once the window had time to settle (it starts at 16).
      const late = windows.slice(Math.floor(windows.length / 2)).sort((a, b) => a - b);
      const median = late[Math.floor(late.length / 2)]!;
      if (median > 80)
        throw new Error(`the window stood at ${median} (median of the run's second half): ${windows.join(" ")}`);
      expect(median).toBeGreaterThanOrEqual(4); // its floor: 2 workers × 2
    } finally {
      await root.close();
    }
  }, 90_000);
});
