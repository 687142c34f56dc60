import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { NoNodesError, Root, type TaskError, setDefaultLogAddress } from "../../src/index.ts";
import { flushLogs } from "../../src/log/log.ts";
import * as tasks from "../fixtures/tasks/index.ts";
import { waitForFile } from "../support/log-server.ts";
import { type RunningNode, runCli, startLogServerAt, startNode } from "../support/nodes.ts";
import { REPO, killAll, removeWithChildren } from "../support/processes.ts";
import { waitFor, within } from "../support/wait.ts";

/**
 * At-least-once, with real node processes: a node killed (SIGKILL) or frozen (SIGSTOP) in the middle
 * of a run loses nothing — its unfinished items go to the other node, duplicates come only from items
 * that were re-sent — and a root that loses every node says so instead of waiting forever.
 */

const TASKS = join(REPO, "test/fixtures/tasks");
let logFile: string;
let logPort: number;
const roots: Root[] = [];

beforeAll(async () => {
  logFile = join(removeWithChildren(mkdtempSync(join(tmpdir(), "pcluster-failover-"))), "cluster.log");
  ({ port: logPort } = await startLogServerAt(logFile));
  // The root's own notes ("node … lost; re-sending N unfinished items") go to this log server too.
  setDefaultLogAddress(["127.0.0.1", logPort]);
}, 60_000);

afterEach(async () => {
  await Promise.all(roots.splice(0).map((root) => root.close().catch(() => {})));
});

afterAll(async () => {
  await flushLogs(1000);
  setDefaultLogAddress(undefined);
  await killAll();
});

async function twoNodes(workers: number): Promise<RunningNode[]> {
  return Promise.all([startNode({ logPort, workers }), startNode({ logPort, workers })]);
}

function track(root: Root): Root {
  roots.push(root);
  return root;
}

type Entry = { id: number; word: string; index: number };
const keyOf = (entry: Entry): string => `${entry.id}.${entry.index}:${entry.word}`;

/** The chain churn → splitWords run sequentially in this process: the keys each input must yield. */
function expectedKeys(lines: string[]): Map<string, number> {
  const keys = new Map<string, number>();
  for (const line of lines) for (const entry of tasks.splitWords(tasks.churn(line))) keys.set(keyOf(entry), entry.id);
  return keys;
}

/**
 * Compares the outputs with the sequential run: every expected output at least once, nothing else, and
 * returns the ids of the inputs some output of which came more than once, and how many extra outputs came.
 */
function checkAtLeastOnce(
  outputs: string[],
  expected: Map<string, number>,
): { duplicatedInputs: Set<number>; extra: number } {
  const counts = new Map<string, number>();
  for (const key of outputs) counts.set(key, (counts.get(key) ?? 0) + 1);
  const missing = [...expected.keys()].filter((key) => !counts.has(key));
  const unexpected = [...counts.keys()].filter((key) => !expected.has(key));
  expect(missing.slice(0, 10)).toEqual([]);
  expect(missing.length).toBe(0);
  expect(unexpected.slice(0, 10)).toEqual([]);
  const duplicatedInputs = new Set<number>();
  let extra = 0;
  for (const [key, count] of counts) {
    if (count > 1) {
      duplicatedInputs.add(expected.get(key)!);
      extra += count - 1;
    }
  }
  return { duplicatedInputs, extra };
}

/** The counts in the root's "re-sending N unfinished items" notes about `address`, from the log file. */
async function resentNotes(address: string, why: RegExp): Promise<number[]> {
  const source = `\\[root\\] node ${address.replaceAll(".", "\\.")} lost \\((.*)\\); re-sending (\\d+) unfinished items`;
  const text = await waitForFile(logFile, (t) => new RegExp(source).test(t), 10_000);
  const notes = [...text.matchAll(new RegExp(source, "g"))];
  for (const note of notes) expect(note[1]).toMatch(why);
  return notes.map((note) => Number(note[2]));
}

/**
 * Items re-sent from a survivor (on a loaded machine it can miss its heartbeat too; it is then re-sent
 * from and set up again): read once the notes about the node under test are in.
 */
async function resentFrom(survivor: string): Promise<number> {
  const text = await Bun.file(logFile).text();
  const notes = /\[root\] node (\S+) lost \(.*?\); re-sending (\d+) unfinished items/g;
  let total = 0;
  for (const note of text.matchAll(notes)) if (note[1] === survivor) total += Number(note[2]);
  return total;
}

describe("a node lost in the middle of a run", () => {
  test("SIGKILL at half-way: every output arrives, duplicates only from re-sent items, and the log says how many", async () => {
    const nodes = await twoNodes(2);
    const cluster = track(new Root(nodes.map((node) => node.addr)));
    const lines = Array.from({ length: 20_000 }, (_, i) => `${i}:w${i % 7} x${i % 13} y${i}`);
    const expected = expectedKeys(lines);
    const outputs: string[] = [];
    let reachedHalf: () => void = () => {};
    const halfway = new Promise<void>((resolve) => (reachedHalf = resolve));
    await cluster.setup(
      "failover",
      "1",
      [{ function: tasks.churn }, { function: tasks.splitWords, isGenerator: true }],
      {
        localPackages: [TASKS],
        // Results come back only as fast as they are handed out here: the nodes cannot finish every item
        // while the outputs of the first half still wait at the root (a root slower than its nodes, as
        // on a loaded machine, saw both nodes idle and nothing left to lose at half-way).
        resultWindow: 64 * 1024,
        outputHandler: (output) => {
          if (outputs.push(keyOf(output as Entry)) === expected.size / 2) reachedHalf();
          // Now and then the handler makes the results wait, so frames of the lost node may still be
          // queued at the root when it is found gone.
          return outputs.length % 1000 === 0 ? Bun.sleep(1) : undefined;
        },
      },
    );
    cluster.feed(...lines);
    // Half-way, the node with more unfinished work dies (whichever it is: the windows adapt to each).
    await within(halfway, 20_000, "half of the outputs");
    // The node with the most items sent to it and not done (the root's count: items it finished whose
    // results it still holds are lost with it too). At the very moment both may have reported (nearly)
    // all they were given, the root busy handing out their results before it sends more: look again
    // then, so that the one killed surely dies with items unfinished.
    const busiest = await waitFor(
      () => cluster.observe().nodes.reduce((most, node) => (node.inFlight > most.inFlight ? node : most)),
      {
        // 100, or half its window when that is smaller (a root slower than its nodes keeps windows small)
        what: "a node with 100 items in flight, or half its window",
        until: (node) => node.inFlight >= Math.min(100, node.window / 2),
        timeoutMs: 5000,
        everyMs: 1,
      },
    );
    const victim = nodes.find((node) => node.addr === busiest.address)!;
    const survivor = nodes.find((node) => node !== victim)!;
    victim.proc.kill("SIGKILL");
    await within(cluster.waitEmpty(), 25_000, "waitEmpty after a node was killed");

    expect(await within(victim.proc.exited, 5000, "the victim's exit")).not.toBe(0);
    const progress = cluster.progress;
    expect(progress.resent).toBeGreaterThan(0);
    const { duplicatedInputs, extra } = checkAtLeastOnce(outputs, expected);
    expect(duplicatedInputs.size).toBeLessThanOrEqual(progress.resent);
    expect(extra).toBeLessThanOrEqual(progress.resent * 4); // 4 outputs per input
    expect(outputs.length).toBe(expected.size + extra);
    expect(progress).toMatchObject({ fed: 20_000, done: 20_000, outputs: outputs.length, queued: 0, inFlight: 0 });
    // Only the survivor is left; it did the rest.
    expect(cluster.nodes).toEqual([survivor.addr]);
    const status = await cluster.status();
    expect(status.map((node) => node.address)).toEqual([survivor.addr]);
    expect(status[0]!.pipeline!.tasks[0]!.processed).toBeGreaterThanOrEqual(progress.resent);

    // The root's note, in the cluster's log: which node, why, and exactly how many items were re-sent.
    const counts = await resentNotes(victim.addr, /closed|reset|lost|connection/i);
    expect(counts).toEqual([progress.resent - (await resentFrom(survivor.addr))]);
  }, 60_000);

  test("a node that stops answering (SIGSTOP) is given up after the heartbeat timeout; its items are re-sent", async () => {
    const nodes = await twoNodes(1);
    const [frozen, survivor] = nodes as [RunningNode, RunningNode];
    const heartbeatTimeoutMs = 1500;
    const cluster = track(new Root([frozen.addr, survivor.addr], { heartbeatMs: 100, heartbeatTimeoutMs }));
    const count = 1200;
    const seen: number[] = [];
    let stoppedAt = 0;
    try {
      await cluster.setup("frozen", "1", [{ function: tasks.block }], {
        localPackages: [TASKS],
        outputHandler: (output) => {
          seen.push((output as { id: number }).id);
          if (stoppedAt === 0 && seen.length >= count / 4) {
            stoppedAt = performance.now();
            frozen.proc.kill("SIGSTOP");
          }
        },
      });
      cluster.feed(...Array.from({ length: count }, (_, id) => ({ id, ms: 1 })));
      await within(cluster.waitEmpty(), 20_000, "waitEmpty with a frozen node");
      const elapsed = performance.now() - stoppedAt;

      expect(stoppedAt).toBeGreaterThan(0);
      // Nothing could finish the frozen node's items before it was given up.
      expect(elapsed).toBeGreaterThanOrEqual(heartbeatTimeoutMs - 100);
      const progress = cluster.progress;
      expect(progress.resent).toBeGreaterThan(0);
      const unique = new Set(seen);
      expect(unique.size).toBe(count);
      expect(Math.min(...unique)).toBe(0);
      expect(Math.max(...unique)).toBe(count - 1);
      expect(seen.length - unique.size).toBeLessThanOrEqual(progress.resent);
      expect(progress).toMatchObject({ fed: count, done: count, queued: 0, inFlight: 0 });
      expect(cluster.nodes).toEqual([survivor.addr]);
      const counts = await resentNotes(frozen.addr, new RegExp(`has not answered for ${heartbeatTimeoutMs} ms`));
      expect(counts).toEqual([progress.resent - (await resentFrom(survivor.addr))]);
    } finally {
      frozen.proc.kill("SIGKILL");
      frozen.proc.kill("SIGCONT");
      await within(frozen.proc.exited, 5000, "the frozen node's exit");
    }
  }, 60_000);
});

describe("a root that is itself busy", () => {
  test("a sync outputHandler that blocks longer than the heartbeat timeout does not get a healthy node given up", async () => {
    const nodes = await twoNodes(1);
    const heartbeatTimeoutMs = 600;
    const cluster = track(
      new Root(
        nodes.map((node) => node.addr),
        { heartbeatMs: 100, heartbeatTimeoutMs },
      ),
    );
    let outputs = 0;
    await cluster.setup("blocking-handler", "1", [{ function: tasks.double }], {
      localPackages: [TASKS],
      outputHandler: () => {
        if (++outputs === 50) Bun.sleepSync(heartbeatTimeoutMs * 3); // the root's event loop stands still
      },
    });
    cluster.feed(...Array.from({ length: 500 }, (_, i) => i));
    await within(cluster.waitEmpty(), 15_000, "waitEmpty after a blocking handler");
    expect(outputs).toBe(500);
    expect(cluster.progress).toMatchObject({ fed: 500, done: 500, resent: 0 });
    expect(cluster.nodes.sort()).toEqual(nodes.map((node) => node.addr).sort());
  }, 60_000);
});

describe("a node lost while its results wait at the root", () => {
  test("items it finished (their results queued behind a slow outputHandler) are not re-sent and count as done", async () => {
    const nodes = await twoNodes(1);
    const [victim, survivor] = nodes as [RunningNode, RunningNode];
    const cluster = track(new Root([victim.addr, survivor.addr]));
    let open: () => void = () => {};
    const gate = new Promise<void>((resolve) => (open = resolve));
    const outputs: number[] = [];
    await cluster.setup("held", "1", [{ function: tasks.double }], {
      localPackages: [TASKS],
      // The 10th output holds every later result at the root until the gate opens.
      outputHandler: (output) => (outputs.push(output as number) === 10 ? gate : undefined),
    });
    const count = 3000;
    cluster.feed(...Array.from({ length: count }, (_, i) => i));
    try {
      // The nodes finish what their windows let them have; no Done is handled, so no more is sent.
      await waitFor(() => cluster.status(), {
        what: "the nodes to drain (10 outputs handed out, nothing in their engines)",
        until: (status) => outputs.length >= 10 && status.every((node) => node.pipeline!.inFlight === 0),
        show: () => `${outputs.length} outputs`,
        everyMs: 20,
      });
      // This answer comes after every result the victim sent: they all wait in the root now.
      await cluster.status();
      const queuedBefore = cluster.progress.queued;
      expect(queuedBefore).toBeGreaterThan(0);
      victim.proc.kill("SIGKILL");
      await waitFor(() => cluster.nodes, {
        what: "the root to drop the killed node",
        until: (addrs) => !addrs.includes(victim.addr),
        timeoutMs: 5000,
      });
      expect(cluster.nodes).toEqual([survivor.addr]);
      // Everything the victim had was finished: nothing to re-send.
      expect(cluster.progress.resent).toBe(0);
    } finally {
      open();
    }
    await within(cluster.waitEmpty(), 15_000, "waitEmpty after the gate opened");
    expect(outputs.length).toBe(count);
    expect(new Set(outputs).size).toBe(count);
    expect(cluster.progress).toMatchObject({
      fed: count,
      done: count,
      outputs: count,
      resent: 0,
      queued: 0,
      inFlight: 0,
    });
  }, 60_000);
});

describe("a task that runs away with memory", () => {
  test("costs its worker, not the node: the worker is ended at --memory-limit, the item given up with the reason, the rest done", async () => {
    // A fresh node of 2 workers peaks near 65 MB; the hog passes 250 MB within about a second.
    const node = await startNode({ logPort, workers: 2, args: ["--memory-limit", "250"] });
    const errors: TaskError[] = [];
    const outputs: number[] = [];
    const root = track(new Root([["127.0.0.1", node.port]]));
    await root.setup("memory", "1", [{ function: tasks.hogOn }], {
      localPackages: [TASKS],
      outputHandler: (output) => void outputs.push(output as number),
      errorHandler: (error) => void errors.push(error),
      maxAttempts: 2,
    });
    const items: unknown[] = Array.from({ length: 3000 }, (_, i) => i);
    items.splice(1500, 0, "hog");
    root.feed(...items);
    await within(root.waitEmpty(), 30_000, "waitEmpty");
    expect(outputs.sort((a, b) => a - b)).toEqual(Array.from({ length: 3000 }, (_, i) => i));
    expect(errors.length).toBe(1);
    expect(errors[0]!.task).toBe("hogOn");
    expect(errors[0]!.failed).toBe(true);
    expect(errors[0]!.message).toMatch(
      /gave up after 2 attempts, each of which took its worker down: the node's memory reached \d+ MB, over its limit of 250 MB/,
    );
    expect(errors[0]!.node).toBe(node.addr);
    // The node is alive and well, and its log says why each worker went.
    expect(node.proc.proc.exitCode).toBeNull();
    const text = await waitForFile(logFile, (t) => (t.match(/over its limit of 250 MB/g) ?? []).length >= 3, 10_000);
    expect(text).toMatch(/worker \d of "memory" 1 died \(the node's memory reached \d+ MB, over its limit of 250 MB/);
    const [report] = await root.status();
    expect(report!.pipeline!.workersReplaced).toBe(2);
    expect(report!.memory.limit).toBe(250 * 1024 * 1024);
    const table = await runCli(["status", "--nodes", node.addr]);
    expect(table.stdout).toMatch(/\s2 \(2 replaced\)\s+\d+\s+awake\s.* of 250 MB\s+\d+\.\d ms\n$/);
    root.feed(1, 2, 3);
    await within(root.waitEmpty(), 10_000, "waitEmpty after");
    expect(outputs.length).toBe(3003);
  }, 60_000);
});

describe("a task that gets stuck", () => {
  test("with taskTimeoutMs, its worker is ended and the item given up with the reason; waitEmpty() returns", async () => {
    const node = await startNode({ logPort, workers: 2 });
    const errors: TaskError[] = [];
    const outputs: number[] = [];
    const root = track(new Root([["127.0.0.1", node.port]]));
    await expect(
      root.setup("stuck", "1", [{ function: tasks.loopOn }], { localPackages: [TASKS], taskTimeoutMs: -1 }),
    ).rejects.toThrow("setup option taskTimeoutMs must be a positive integer, got -1");
    await root.setup("stuck", "1", [{ function: tasks.loopOn }], {
      localPackages: [TASKS],
      outputHandler: (output) => void outputs.push(output as number),
      errorHandler: (error) => void errors.push(error),
      maxAttempts: 2,
      taskTimeoutMs: 500,
    });
    root.feed(0, 1, "loop", 2, 3);
    await within(root.waitEmpty(), 20_000, "waitEmpty");
    expect(outputs.sort()).toEqual([0, 1, 2, 3]);
    expect(errors.map((error) => [error.task, error.failed, error.node])).toEqual([["loopOn", true, node.addr]]);
    expect(errors[0]!.message).toContain(
      "gave up after 2 attempts, each of which took its worker down: its task got nothing done for 500 ms",
    );
  }, 60_000);
});

describe("every node lost", () => {
  test("waitEmpty, waitInput, feed and feedAsync fail with NoNodesError instead of waiting forever", async () => {
    const nodes = await twoNodes(1);
    const cluster = track(new Root(nodes.map((node) => node.addr)));
    let outputs = 0;
    await cluster.setup("doomed", "1", [{ function: tasks.block }], {
      localPackages: [TASKS],
      outputHandler: () => void outputs++,
    });
    cluster.feed(...Array.from({ length: 200 }, (_, id) => ({ id, ms: 20 })));
    const empty = cluster.waitEmpty();
    const settled = empty.then(
      () => undefined,
      (error: Error) => error,
    );
    await waitFor(() => outputs, { what: "4 outputs", until: (n) => n >= 4 });
    for (const node of nodes) node.proc.kill("SIGKILL");

    const error = await within(settled, 5000, "waitEmpty after every node was killed");
    expect(error).toBeInstanceOf(NoNodesError);
    expect(error!.message).toMatch(/every node is lost/);
    expect(error!.message).toMatch(/items are not finished/);
    expect(() => cluster.feed(1)).toThrow(NoNodesError);
    await expect(within(cluster.feedAsync(1), 2000, "feedAsync")).rejects.toBeInstanceOf(NoNodesError);
    await expect(within(cluster.waitInput(), 2000, "waitInput")).rejects.toBeInstanceOf(NoNodesError);
    await expect(within(cluster.waitEmpty(), 2000, "waitEmpty")).rejects.toBeInstanceOf(NoNodesError);
    await expect(within(cluster.run([1, 2]), 2000, "run")).rejects.toBeInstanceOf(NoNodesError);
    expect(cluster.progress.resent).toBeGreaterThan(0);

    // As the error says: with new nodes, setup() works again, and the lost ones are no longer tried.
    const fresh = await startNode({ logPort, workers: 1 });
    expect(cluster.nodes).toEqual([]);
    cluster.addNode(fresh.addr);
    const again: number[] = [];
    await within(
      cluster.setup("revived", "1", [{ function: tasks.double }], {
        localPackages: [TASKS],
        outputHandler: (output) => void again.push(output as number),
      }),
      15_000,
      "setup on a new node",
    );
    cluster.feed(1, 2, 3);
    await within(cluster.waitEmpty(), 5000, "waitEmpty on the new node");
    expect(again.sort()).toEqual([2, 4, 6]);
  }, 60_000);
});
