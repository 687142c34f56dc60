import { afterAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { Root, type TaskError } from "../../src/index.ts";
import * as tasks from "../fixtures/tasks/index.ts";
import { type RunningNode, startNode } from "../support/nodes.ts";
import { REPO, killAll } from "../support/processes.ts";

/**
 * Contain, don't cascade: an item that takes down every node it reaches is given up after
 * `maxAttempts` nodes died on it; nodes that come back are set up again and the run goes on.
 */

const TASKS = join(REPO, "test/fixtures/tasks");
const roots: Root[] = [];

afterAll(async () => {
  await Promise.all(roots.map((root) => root.close()));
  await killAll();
}, 20_000);

describe("a poison item", () => {
  test("that kills every node process it reaches, among 2000 good ones on a Root.local that restarts its nodes: the good all done, the poison reported", async () => {
    const cluster = await Root.local({ nodes: 2, workers: 1 });
    roots.push(cluster);
    const seen = new Set<unknown>();
    const errors: TaskError[] = [];
    await cluster.setup("poison", "1", [{ function: tasks.killOn }], {
      localPackages: [TASKS],
      maxAttempts: 3,
      outputHandler: (output) => void seen.add(output),
      errorHandler: (error) => void errors.push(error),
    });
    const items: unknown[] = Array.from({ length: 2000 }, (_, i) => i);
    items.splice(700, 0, "poison");
    await cluster.run(items);
    expect(seen.size).toBe(2000); // at least once: a good item that was on a dying node ran again
    for (let i = 0; i < 2000; i++) expect(seen.has(i)).toBe(true);
    expect(seen.has("poison")).toBe(false);
    expect(errors).toHaveLength(1);
    expect(errors[0]!.failed).toBe(true);
    expect(errors[0]!.message).toContain("3 nodes that died");
    expect(errors[0]!.message).toContain('"poison"');
    // Both nodes come back (restarted by the local cluster) and are set up again by the root.
    let names: Array<string | undefined> = [];
    for (const deadline = Date.now() + 30_000; Date.now() < deadline; await Bun.sleep(100)) {
      names = (await cluster.status()).map((node) => node.pipeline?.name);
      if (names.length === 2 && names.every((name) => name === "poison")) break;
    }
    expect(names).toEqual(["poison", "poison"]);
    await cluster.run([1, 2, 3]);
    expect(cluster.progress.done).toBe(2004);
  }, 90_000);
});

describe("a node that joins", () => {
  test("addNode() during a run sets the new node up and gives it work", async () => {
    const [first, second]: RunningNode[] = await Promise.all([startNode({ workers: 1 }), startNode({ workers: 1 })]);
    const root = new Root([first!.addr]);
    roots.push(root);
    const nodesSeen = new Set<number>();
    await root.setup("join", "1", [{ function: tasks.sleepy }], {
      localPackages: [TASKS],
      outputHandler: () => {},
    });
    root.feedMany(Array.from({ length: 300 }, (_, id) => ({ id, ms: 5 })));
    root.addNode(second!.addr);
    for (const deadline = Date.now() + 20_000; Date.now() < deadline && nodesSeen.size < 2; ) {
      const status = await root.status();
      for (const [index, node] of status.entries())
        if ((node.pipeline?.tasks[0]?.processed ?? 0) > 0) nodesSeen.add(index);
      await Bun.sleep(50);
    }
    await root.waitEmpty();
    expect(nodesSeen.size).toBe(2);
    expect(root.progress.done).toBe(300);
  }, 60_000);
});
