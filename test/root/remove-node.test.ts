import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { Root, StateError } from "../../src/index.ts";
import * as tasks from "../fixtures/tasks/index.ts";
import { type RunningNode, startNode } from "../support/nodes.ts";
import { REPO, killAll } from "../support/processes.ts";
import { consoleNotes } from "../support/console-notes.ts";
import { lanesOf, processedOn, setupCountingBlocks, waitInFlight, waitInRun } from "../support/run-probes.ts";
import { waitFor } from "../support/wait.ts";

/**
 * `removeNode` takes a node out of a run, as `addNode` puts one in: the node gets no more items, those
 * it has finish there, then it is reset — free for another root — and forgotten. Past its `timeoutMs`,
 * what is left goes to the other nodes, as when a node is lost.
 */

const TASKS = join(REPO, "test/fixtures/tasks");
let leaving: RunningNode;
let staying: RunningNode;

beforeAll(async () => {
  [leaving, staying] = await Promise.all([startNode({ workers: 2 }), startNode({ workers: 2 })]);
}, 60_000);
afterAll(() => killAll());

/** Whether `node` runs no pipeline, as another root sees it. */
async function isFree(node: RunningNode): Promise<boolean> {
  await using look = new Root([node.addr]);
  const [status] = await look.status();
  return status!.pipeline === null;
}

test("mid-run: the node finishes its items and is freed; nothing is sent again, every output arrives once", async () => {
  await using cluster = new Root([leaving.addr, staying.addr]);
  const seen = await setupCountingBlocks(cluster, "remove");
  const ids = Array.from({ length: 80 }, (_, id) => id);
  const notes = await consoleNotes(async () => {
    const running = cluster.run(ids.map((id) => ({ id, ms: 40 })));
    await waitFor(() => processedOn(cluster, leaving), { what: "items done on the node", until: (n) => n >= 4 });
    await cluster.removeNode(leaving.addr);
    expect(cluster.nodes).toEqual([staying.addr]);
    expect(await isFree(leaving)).toBe(true); // another root may have it now
    await running;
  });
  expect(cluster.progress.resent).toBe(0);
  expect([...seen.keys()].sort((a, b) => a - b)).toEqual(ids);
  expect([...seen.values()].every((times) => times === 1)).toBe(true);
  expect(notes).toMatch(
    new RegExp(`node ${leaving.addr} is being removed: it gets no more items, and finishes its \\d+ items`),
  );
  expect(notes).toContain(`node ${leaving.addr} left, its items finished (removed by removeNode())`);
  expect(notes).not.toContain("set up again"); // removed: it is not tried again
}, 60_000);

test("past timeoutMs, what the node has not finished goes to the other nodes; the node is freed", async () => {
  await using cluster = new Root([leaving.addr]);
  const seen = await setupCountingBlocks(cluster, "remove-late");
  cluster.feed({ id: 7, ms: 3000 });
  await waitInFlight(cluster, 1);
  cluster.addNode(staying.addr);
  await waitInRun(cluster, staying);
  await cluster.removeNode(leaving.addr, { timeoutMs: 200 });
  expect(await isFree(leaving)).toBe(true);
  await cluster.waitEmpty();
  expect([...seen]).toEqual([[7, 1]]); // once
  expect(cluster.progress.resent).toBe(1);
}, 60_000);

test("a node lost and being tried again can be removed: it is not set up when it is back", async () => {
  const coming = await startNode({ workers: 1 });
  await using cluster = new Root([coming.addr, staying.addr]);
  await cluster.setup("remove-lost", "1", [{ function: tasks.block }], { localPackages: [TASKS] });
  await cluster.run([{ id: 1, ms: 1 }]);
  coming.proc.kill("SIGKILL");
  await waitFor(() => lanesOf(cluster), { what: "the node lost", until: (lanes) => !lanes.includes(coming.addr) });
  await cluster.removeNode(coming.addr); // out of the root's nodes already, but tried again until now
  expect(cluster.nodes).toEqual([staying.addr]);
  const back = await startNode({ workers: 1, port: coming.port, workdir: coming.workdir });
  // The root tries a lost node every 2 s at most: a run of 3 s after it is back outlasts its next try.
  await cluster.run([{ id: 2, ms: 3000 }]);
  expect(await isFree(back)).toBe(true);
  expect(lanesOf(cluster)).toEqual([staying.addr]);
}, 60_000);

test("outside a run it resets and forgets the node; a node it does not have is refused", async () => {
  await using cluster = new Root([leaving.addr, staying.addr]);
  await cluster.setup("remove-idle", "1", [{ function: tasks.double }], { localPackages: [TASKS] });
  await cluster.run([1]);
  await cluster.removeNode(leaving.addr);
  expect(cluster.nodes).toEqual([staying.addr]);
  expect(await isFree(leaving)).toBe(true);
  const outputs: number[] = [];
  await cluster.setup("after-remove", "1", [{ function: tasks.double }], {
    localPackages: [TASKS],
    outputHandler: (output) => void outputs.push(output as number),
  });
  await cluster.run([1, 2]);
  expect(outputs.sort()).toEqual([2, 4]);
  expect(await isFree(leaving)).toBe(true); // the next setup left it alone
  const error = await cluster.removeNode(leaving.addr).catch((e: unknown) => e);
  expect(error).toBeInstanceOf(StateError);
  expect((error as Error).message).toBe(
    `removeNode: ${leaving.addr} is not one of this root's nodes (${staying.addr})`,
  );
}, 60_000);
