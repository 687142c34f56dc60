import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Root } from "../../src/index.ts";
import * as tasks from "../fixtures/tasks/index.ts";
import { type RunningNode, startNode, tearDown } from "../support/nodes.ts";
import { REPO } from "../support/processes.ts";

/**
 * A few long items (a transcode, a simulation: seconds each) must run at once on as many workers as
 * there are items, whichever nodes those are on: none may wait behind another on a busy worker while a
 * worker idles. Each item here holds its worker until every item of the run has started (or 20 s
 * pass), so an item queued behind another never meets the rest — whatever the machine's speed.
 */
const TASKS = join(REPO, "test/fixtures/tasks");
const dir = mkdtempSync(join(tmpdir(), "pcluster-spread-"));
let nodes: RunningNode[] = [];
const roots: Root[] = [];

beforeAll(async () => {
  nodes = await Promise.all([startNode({ workers: 2 }), startNode({ workers: 2 })]);
}, 30_000);

afterAll(async () => {
  await Promise.all(roots.map((root) => root.close()));
  await tearDown([], [dir, ...nodes.map((node) => node.workdir)]);
}, 20_000);

type Met = { id: number; met: boolean; thread: string };

/** Runs `count` items that wait for each other on a fresh root of `on`; returns their outputs. */
async function meetOn(on: RunningNode[], count: number, run: string): Promise<Met[]> {
  const root = new Root(on.map((node) => node.addr));
  roots.push(root);
  const outputs: Met[] = [];
  await root.setup(`spread-${run}`, "1", [{ function: tasks.meet }], {
    localPackages: [TASKS],
    outputHandler: (output) => void outputs.push(output as Met),
  });
  const marks = join(dir, run);
  mkdirSync(marks);
  await root.run(Array.from({ length: count }, (_, id) => ({ dir: marks, id, of: count })));
  await root.reset();
  return outputs.sort((a, b) => a.id - b.id);
}

describe("a few long items", () => {
  test("on one node, each goes to a worker of its own", async () => {
    const outputs = await meetOn([nodes[0]!], 2, "one-node");
    expect(outputs.map((output) => output.met)).toEqual([true, true]);
    expect(new Set(outputs.map((output) => output.thread)).size).toBe(2);
  }, 60_000);

  test("on two nodes, they are shared out: each runs on a worker of its own, on both nodes at once", async () => {
    const outputs = await meetOn(nodes, 4, "two-nodes");
    expect(outputs.map((output) => output.met)).toEqual([true, true, true, true]);
    const threads = new Set(outputs.map((output) => output.thread));
    expect(threads.size).toBe(4);
    expect(new Set([...threads].map((thread) => thread.split("/")[0])).size).toBe(2); // two processes
  }, 60_000);

  test("three on two nodes of two workers: none waits behind another", async () => {
    const outputs = await meetOn(nodes, 3, "three");
    expect(outputs.map((output) => output.met)).toEqual([true, true, true]);
    expect(new Set(outputs.map((output) => output.thread)).size).toBe(3);
  }, 60_000);
});
