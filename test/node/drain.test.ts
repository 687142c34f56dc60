import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { Root } from "../../src/index.ts";
import { formatStatuses } from "../../src/root/inspect.ts";
import * as tasks from "../fixtures/tasks/index.ts";
import { runCli, startNode } from "../support/nodes.ts";
import { REPO, killAll } from "../support/processes.ts";
import { consoleNotes } from "../support/console-notes.ts";
import { processedOn, setupCountingBlocks, waitInFlight, waitInRun } from "../support/run-probes.ts";
import { waitFor } from "../support/wait.ts";

/**
 * A node asked to stop (SIGTERM, SIGINT: a rolling restart, `systemctl stop`, a pod deleted) lets the
 * items it has finish first: its root sends it nothing more, nothing is sent again (a task with side
 * effects does not run twice), and the node exits by itself — within `--drain-timeout`, after which
 * what is left goes to the other nodes, as when a node dies. A second signal stops it at once.
 */

const TASKS = join(REPO, "test/fixtures/tasks");
afterAll(() => killAll());

test("SIGTERM: the node finishes its items and exits; none is sent again, and every output arrives once", async () => {
  const [stopping, staying] = await Promise.all([startNode({ workers: 2 }), startNode({ workers: 2 })]);
  await using cluster = new Root([stopping.addr, staying.addr]);
  const seen = await setupCountingBlocks(cluster, "drain");
  const ids = Array.from({ length: 80 }, (_, id) => id);
  const notes = await consoleNotes(async () => {
    const running = cluster.run(ids.map((id) => ({ id, ms: 50 })));
    await waitFor(() => processedOn(cluster, stopping), { what: "items done on the node", until: (n) => n >= 4 });
    stopping.proc.kill("SIGTERM");
    expect(await stopping.proc.waitExit(30_000)).toBe(0);
    await running;
  });
  const [, inFlight] = /stopping: the (\d+) items of "drain" 1 here finish first/.exec(stopping.proc.output) ?? [];
  expect(Number(inFlight)).toBeGreaterThan(0); // it had items when told to stop ...
  expect(cluster.progress.resent).toBe(0); // ... and finished them: none went to the other node
  expect(stopping.proc.output).not.toContain("unfinished");
  expect([...seen.keys()].sort((a, b) => a - b)).toEqual(ids);
  expect([...seen.values()].every((times) => times === 1)).toBe(true);
  expect(notes).toContain(`node ${stopping.addr} is stopping: it gets no more items`);
  expect(notes).toContain(
    `node ${stopping.addr} left, its items finished (node ${stopping.addr} reset the pipeline: the node is shutting down)`,
  );
  expect(notes).not.toContain("lost");
  // The other node took everything after the signal, and the root works on with it alone.
  const after: number[] = [];
  await cluster.setup("drain-after", "1", [{ function: tasks.double }], {
    localPackages: [TASKS],
    outputHandler: (output) => void after.push(output as number),
  });
  await cluster.run([1, 2, 3]);
  expect(after.sort()).toEqual([2, 4, 6]);
}, 60_000);

test("an item longer than --drain-timeout is sent to another node once the drain ends; the run completes", async () => {
  const stopping = await startNode({ workers: 1, args: ["--drain-timeout", "1"] });
  await using cluster = new Root([stopping.addr]);
  const seen = await setupCountingBlocks(cluster, "drain-late");
  cluster.feed({ id: 7, ms: 4000 });
  await waitInFlight(cluster, 1);
  const other = await startNode({ workers: 1 });
  cluster.addNode(other.addr);
  await waitInRun(cluster, other);
  stopping.proc.kill("SIGTERM");
  expect(await stopping.proc.waitExit(30_000)).toBe(0);
  expect(stopping.proc.output).toMatch(/stopping with 1 items unfinished after 1 s: the root sends them elsewhere/);
  await cluster.waitEmpty();
  expect([...seen]).toEqual([[7, 1]]); // once
  expect(cluster.progress.resent).toBe(1);
}, 60_000);

test("a second signal stops a draining node at once", async () => {
  const stopping = await startNode({ workers: 1, args: ["--drain-timeout", "600"] });
  await using cluster = new Root([stopping.addr]);
  await cluster.setup("drain-twice", "1", [{ function: tasks.block }], { localPackages: [TASKS] });
  cluster.feed({ id: 1, ms: 120_000 });
  await waitInFlight(cluster, 1);
  stopping.proc.kill("SIGINT");
  await stopping.proc.waitFor(/stopping: the 1 items of "drain-twice" 1 here finish first, for at most 600 s/);
  // Its status says so, to its root (and `pcluster status`, the dashboard).
  const [status] = await cluster.status();
  expect(status!.stopping).toBe(true);
  expect(formatStatuses([{ address: stopping.addr, status: status! }])).toMatch(/\bstopping\b/);
  const asked = await runCli(["status", "--nodes", stopping.addr]); // a new connection: it still listens
  expect(asked.stdout).toMatch(new RegExp(`${stopping.addr.replaceAll(".", "\\.")} .*\\bstopping\\b`));
  stopping.proc.kill("SIGINT");
  // Far less than the 10 minutes the drain would take, and than the item.
  expect(await stopping.proc.waitExit(30_000)).toBe(0);
}, 60_000);
