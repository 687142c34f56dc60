import { afterAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { Root, StateError, getDefaultLogAddress } from "../../src/index.ts";
import * as tasks from "../fixtures/tasks/index.ts";
import { startNode, tryNodeAt } from "../support/nodes.ts";
import { childrenOf, killPids, waitGone } from "../support/pids.ts";
import { REPO, type Spawned, killAll, spawnBun } from "../support/processes.ts";
import { waitFor } from "../support/wait.ts";

/**
 * How a root's life ends: a script that forgets reset()/close() still exits and frees its nodes,
 * `await using` stops a local cluster at the end of its block, and searchNodes finds nodes to run on.
 */

const TASKS = join(REPO, "test/fixtures/tasks");
/** Processes started outside the support helpers' bookkeeping (a local cluster's), killed if a test left them. */
const recorded = new Set<number>();
const temps: string[] = [];

afterAll(async () => {
  await killAll();
  killPids(recorded);
  await Promise.all(temps.map((dir) => rm(dir, { recursive: true, force: true })));
});

describe("a script that forgets reset() and close()", () => {
  test("with Root.local: it exits by itself when its work is done, and no process it started is left", async () => {
    const script = spawnBun([join(REPO, "test/support/local-exit.ts"), "forget"], {
      env: { PCLUSTER_TOKEN: undefined },
    });
    const [, json] = await script.waitFor(/LOCAL (\{.*\})/, 20_000);
    const report = JSON.parse(json!) as { pids: number[]; workdir: string; outputs: number; sum: number };
    for (const pid of report.pids) recorded.add(pid);
    expect(report.pids).toHaveLength(2); // the log server and the node
    expect(report.outputs).toBe(200);
    expect(report.sum).toBe(2 * ((199 * 200) / 2));
    // Before the fix the node processes held the script open forever (waitExit's bound says "by itself").
    expect(await script.waitExit(10_000)).toBe(0);
    expect(await waitGone(report.pids, 5000)).toEqual([]);
    expect(existsSync(report.workdir)).toBe(false);
  }, 60_000);

  test("with an external node: it exits by itself and frees the node as it ends (no grace to wait out)", async () => {
    const node = await startNode({ workers: 1 });
    const script = spawnBun([join(REPO, "test/support/root-forgets-reset.ts"), node.addr], {
      env: { PCLUSTER_TOKEN: undefined },
    });
    expect(await script.waitExit(15_000)).toBe(0);
    expect(script.stdout).toContain(`DONE 200 ${199 * 200}`);
    // The root reset its node as the program ended: the grace is for roots that crash.
    await node.proc.waitFor(/reset "forgetful-remote" 1: reset by its root/, 5000);
    expect(node.proc.stdout + node.proc.stderr).not.toMatch(/disconnected; resetting "forgetful-remote"/);
    const observer = new Root([node.addr]);
    try {
      await waitFor(async () => (await observer.status())[0]!.pipeline, {
        what: "the node to reset the orphaned pipeline",
        until: (pipeline) => pipeline === null,
        everyMs: 50,
      });
      // Free for another root.
      const outputs: number[] = [];
      await observer.setup("after", "1", [{ function: tasks.double }], {
        localPackages: [TASKS],
        outputHandler: (output) => void outputs.push(output as number),
      });
      observer.feed(21);
      await observer.waitEmpty();
      expect(outputs).toEqual([42]);
    } finally {
      await observer.close();
    }
  }, 60_000);
});

describe("a root stopped mid-run (SIGSTOP) for longer than its nodes' --root-timeout", () => {
  test("its nodes take it for gone and free themselves; continued, it sets them up again and every output comes once", async () => {
    const nodes = await Promise.all([0, 1].map(() => startNode({ workers: 1, args: ["--root-timeout", "1"] })));
    const script = spawnBun([join(REPO, "test/support/paused-root.ts"), nodes.map((node) => node.addr).join(",")], {
      env: { PCLUSTER_TOKEN: undefined, CONSOLA_LEVEL: "3" }, // its info lines too (it says which nodes joined)
    });
    await script.waitFor(/RUNNING/, 20_000);
    script.proc.kill("SIGSTOP");
    try {
      // A stopped process keeps its sockets open: only its silence tells the nodes it is gone.
      for (const node of nodes) {
        await node.proc.waitFor(/root \S+ disconnected \(it sent nothing for 1000 ms\); resetting "paused" 1/, 10_000);
      }
    } finally {
      script.proc.kill("SIGCONT");
    }
    expect(await script.waitExit(30_000)).toBe(0);
    const [, outputs, distinct, resent] = script.stdout.match(/DONE (\d+) (\d+) (\d+)/)!.map(Number);
    expect({ outputs, distinct }).toEqual({ outputs: 400, distinct: 400 });
    expect(resent).toBeGreaterThan(0); // what the nodes held when they let go was sent again
    expect(script.output).toMatch(/node \S+ lost \(node \S+ closed the connection\)/);
    for (const node of nodes) expect(script.output).toContain(`node ${node.addr} joined "paused" 1`);
  }, 60_000);
});

describe("await using", () => {
  test("a Root.local cluster in a block: after the block its processes are gone and its work dir removed", async () => {
    const before = new Set(childrenOf(process.pid));
    const logAddressBefore = getDefaultLogAddress();
    let pids: number[] = [];
    let workdir = "";
    {
      await using cluster = await Root.local({ nodes: 2, workers: 1 });
      pids = childrenOf(process.pid).filter((pid) => !before.has(pid));
      for (const pid of pids) recorded.add(pid);
      workdir = dirname(cluster.logFile!);
      const outputs: number[] = [];
      await cluster.setup("block", "1", [{ function: tasks.double }], {
        localPackages: [TASKS],
        outputHandler: (output) => void outputs.push(output as number),
      });
      await cluster.run(Array.from({ length: 100 }, (_, i) => i));
      expect(outputs.length).toBe(100);
      expect(pids).toHaveLength(3); // the log server and two nodes
      expect(existsSync(workdir)).toBe(true);
      // log() goes to the local cluster's log server while it runs (unless the program chose one)…
      if (logAddressBefore === undefined) expect(getDefaultLogAddress()?.[0]).toBe("127.0.0.1");
    }
    expect(await waitGone(pids, 1000)).toEqual([]);
    expect(existsSync(workdir)).toBe(false);
    // …and not to its dead address after.
    expect(getDefaultLogAddress()).toEqual(logAddressBefore);
  }, 60_000);
});

describe("a Root.local after reset()", () => {
  test("setup() again replaces the pipeline; after reset() its nodes are gone and setup() says so", async () => {
    const cluster = await Root.local({ nodes: 1, workers: 1 });
    try {
      const outputs: number[] = [];
      const outputHandler = (output: unknown) => void outputs.push(output as number);
      await cluster.setup("first", "1", [{ function: tasks.double }], { localPackages: [TASKS], outputHandler });
      await cluster.run([1, 2]);
      await cluster.setup("second", "1", [{ function: tasks.identity }], { localPackages: [TASKS], outputHandler });
      await cluster.run([3]);
      expect(outputs.sort()).toEqual([2, 3, 4]);
      await cluster.reset();
      const error = await cluster
        .setup("third", "1", [{ function: tasks.double }], { localPackages: [TASKS] })
        .catch((caught: Error) => caught);
      expect(error).toBeInstanceOf(StateError);
      expect((error as Error).message).toContain("reset() stopped this root's local cluster");
      // Asking the nodes that are gone says the same, not "could not connect".
      const asked = await cluster.status().catch((caught: Error) => caught);
      expect(asked).toBeInstanceOf(StateError);
      expect((asked as Error).message).toStartWith(
        "cannot ask the nodes' status: reset() stopped this root's local cluster",
      );
      expect(await cluster.stats().catch((caught: Error) => caught)).toBeInstanceOf(StateError);
    } finally {
      await cluster.close();
    }
  }, 60_000);
});

describe("searchNodes", () => {
  /** A node on `host:port` (a loopback address), or undefined when it could not listen there. */
  const nodeAt = (host: string, port: number, workdir: string) => tryNodeAt(host, port, workdir);

  test("finds the nodes of 127.0.0.0/24, says how many it added, and a pipeline runs on them", async () => {
    const temp = await mkdtemp(join(tmpdir(), "pcluster-search-"));
    temps.push(temp);
    // The same port on 127.0.0.2 and 127.0.0.3; another port if either is taken.
    let port = 0;
    let nodes: Spawned[] = [];
    for (let attempt = 0; attempt < 8 && nodes.length < 2; attempt++) {
      port = 20_000 + Math.floor(Math.random() * 40_000);
      const started = await Promise.all(
        ["127.0.0.2", "127.0.0.3"].map((host) => nodeAt(host, port, join(temp, `${host}-${port}`))),
      );
      nodes = started.filter((proc) => proc !== undefined);
      if (nodes.length < 2) for (const proc of nodes) proc.kill("SIGKILL");
    }
    expect(nodes).toHaveLength(2);
    const expected = [`127.0.0.2:${port}`, `127.0.0.3:${port}`];

    const cluster = new Root();
    const other = new Root();
    try {
      // Patient enough for nodes on a loaded machine to greet (the default gives up a mute one in 600 ms).
      expect(await cluster.searchNodes({ network: "127.0.0.0/24", port, timeoutMs: 2000 })).toBe(2);
      expect(cluster.nodes.sort()).toEqual(expected);
      expect(await cluster.searchNodes({ network: "127.0.0.0/24", port })).toBe(0); // known already

      const outputs: number[] = [];
      await cluster.setup("found", "1", [{ function: tasks.double }], {
        localPackages: [TASKS],
        outputHandler: (output) => void outputs.push(output as number),
      });
      await cluster.run(Array.from({ length: 2000 }, (_, i) => i));
      expect(outputs.sort((a, b) => a - b)).toEqual(Array.from({ length: 2000 }, (_, i) => 2 * i));
      const status = await cluster.status();
      expect(status.map((node) => node.address).sort()).toEqual(expected);
      // Both did some of it.
      for (const node of status) expect(node.pipeline!.tasks[0]!.processed).toBeGreaterThan(0);
      expect(status.reduce((sum, node) => sum + node.pipeline!.tasks[0]!.processed, 0)).toBe(2000);

      // Another root's search skips them while they are busy, and adds them once they are free.
      expect(await other.searchNodes({ network: "127.0.0.0/24", port })).toBe(0);
      expect(other.nodes).toEqual([]);
      await cluster.reset();
      expect(await other.searchNodes({ network: "127.0.0.0/24", port, timeoutMs: 2000 })).toBe(2);
    } finally {
      await cluster.close();
      await other.close();
      for (const proc of nodes) proc.kill("SIGKILL");
    }
  }, 60_000);
});
