import { afterAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { AuthError } from "../../src/errors.ts";
import { dial } from "../../src/protocol/handshake.ts";
import type { NodeStatus } from "../../src/protocol/pipeline.ts";
import { defaultMemoryLimit } from "../../src/node/engine/memory-limit.ts";
import { type LocalCluster, startLocalCluster } from "../../src/root/local.ts";
import { waitForFile } from "../support/log-server.ts";
import { waitGone } from "../support/pids.ts";
import { REPO, killAll, removeWithChildren, spawnBun } from "../support/processes.ts";

const MB = 1024 * 1024;
const started: LocalCluster[] = [];
const orphans: number[] = [];

/** A cluster whose processes do not inherit a token from the environment the tests run in. */
async function start(options: Parameters<typeof startLocalCluster>[0] = {}): Promise<LocalCluster> {
  const saved = process.env.PCLUSTER_TOKEN;
  delete process.env.PCLUSTER_TOKEN;
  try {
    const cluster = await startLocalCluster(options);
    started.push(cluster);
    return cluster;
  } finally {
    if (saved !== undefined) process.env.PCLUSTER_TOKEN = saved;
  }
}

async function statusOf([host, port]: [string, number], token?: string): Promise<NodeStatus> {
  const { connection } = await dial({ hostname: host, port, service: "node", token, timeoutMs: 3000 });
  try {
    return await connection.request<NodeStatus>("status", undefined, 3000);
  } finally {
    connection.close();
  }
}

afterAll(async () => {
  await Promise.all(started.map((cluster) => cluster.stop()));
  await killAll();
  for (const pid of orphans) {
    try {
      process.kill(pid, "SIGKILL"); // only if a test failed and left one: it is ours
    } catch {
      // gone, as it should be
    }
  }
});

describe("startLocalCluster", () => {
  test("starts a log server and nodes that answer status; stop() ends them all and removes the work dir", async () => {
    const cluster = await start({ nodes: 2, workers: 1 });
    expect(cluster.nodes).toHaveLength(2);
    expect(cluster.processes.map((child) => child.name)).toEqual(["log", "node-0", "node-1"]);
    for (const node of cluster.nodes) {
      expect(node[0]).toBe("127.0.0.1");
      const status = await statusOf(node);
      expect(status).toMatchObject({ listen: `127.0.0.1:${node[1]}`, workers: 1, pipeline: null });
      // Two nodes on one machine share its memory: each may use half of the default.
      expect(status.memory.limit).toBe(Math.floor(defaultMemoryLimit() / 2 / MB) * MB);
      expect(status.memory.used).toBeGreaterThan(0);
      expect(status.memory.used).toBeLessThan(status.memory.limit);
    }
    expect(cluster.logAddress[0]).toBe("127.0.0.1");
    expect(cluster.logFile).toBe(join(cluster.workdir, "pcluster.log"));
    expect(existsSync(cluster.logFile)).toBe(true);
    // The nodes log to the cluster's log server.
    await waitForFile(cluster.logFile, (text) => cluster.nodes.every(([, port]) => text.includes(`127.0.0.1:${port}`)));

    await cluster.stop();
    expect(
      await waitGone(
        cluster.processes.map((child) => child.pid),
        1000,
      ),
    ).toEqual([]);
    expect(existsSync(cluster.workdir)).toBe(false);
    await cluster.stop(); // idempotent
  }, 60_000);

  test("a token is required of whoever talks to the nodes", async () => {
    const cluster = await start({ nodes: 1, workers: 1, token: "local-secret", memoryLimitMb: 512 });
    expect(cluster.nodes).toHaveLength(1);
    await expect(statusOf(cluster.nodes[0]!)).rejects.toThrow(AuthError);
    const status = await statusOf(cluster.nodes[0]!, "local-secret");
    expect(status.pipeline).toBeNull();
    expect(status.memory.limit).toBe(512 * MB);
    await cluster.stop();
  }, 60_000);

  test("a process that cannot start fails the start, with its output in the error", async () => {
    const error = await startLocalCluster({ nodes: 1, logFile: "/nonexistent-pcluster-dir/sub/pcluster.log" }).then(
      () => undefined,
      (caught: Error) => caught,
    );
    expect(error).toBeInstanceOf(Error);
    expect(error!.message).toContain("the log process");
    expect(error!.message).toContain("cannot open the log file");
  }, 60_000);

  test("refuses a node count, worker count or memory limit that is not a positive integer", async () => {
    await expect(startLocalCluster({ nodes: 0 })).rejects.toThrow(/nodes must be a positive integer/);
    await expect(startLocalCluster({ workers: 1.5 })).rejects.toThrow(/workers must be a positive integer/);
    await expect(startLocalCluster({ memoryLimitMb: -1 })).rejects.toThrow(/memoryLimitMb must be a positive integer/);
  });

  test("what a task prints with console.log and console.error shows in the script's output, marked with its node", async () => {
    const script = spawnBun([join(REPO, "test/support/local-exit.ts"), "console"], {
      env: { PCLUSTER_TOKEN: undefined },
    });
    expect(await script.waitExit(30_000)).toBe(0);
    await script.drained;
    expect(script.stdout).toContain("DONE");
    for (const item of [1, 2]) {
      expect(script.stdout).toContain(`[node-0] a task's console.log: ${item}\n`);
      expect(script.stderr).toContain(`[node-0] a task's console.error: ${item}\n`);
    }
    // Nothing else of a quiet node's: not its start line, nor its notes (they are in the log file).
    expect(script.output).not.toContain("listening on");
    expect(script.output).not.toContain("ready on");
  }, 60_000);

  for (const mode of ["exit", "throw", "signal"] as const) {
    test(`a parent that ends without stop() (${mode}) leaves no process behind`, async () => {
      const parent = spawnBun([join(REPO, "test/support/local-exit.ts"), mode], { env: { PCLUSTER_TOKEN: undefined } });
      const [, json] = await parent.waitFor(/LOCAL (\{.*\})/, 20_000);
      const { pids, workdir } = JSON.parse(json!) as { pids: number[]; workdir: string };
      orphans.push(...pids);
      expect(pids).toHaveLength(3);
      if (mode === "signal") parent.kill("SIGTERM");
      await parent.waitExit(10_000);
      expect(await waitGone(pids)).toEqual([]);
      expect(existsSync(workdir)).toBe(false);
    }, 60_000);
  }

  test("a parent killed with SIGKILL (no handler can run) still leaves no process behind: they notice and stop", async () => {
    const parent = spawnBun([join(REPO, "test/support/local-exit.ts"), "signal"], {
      env: { PCLUSTER_TOKEN: undefined },
    });
    const [, json] = await parent.waitFor(/LOCAL (\{.*\})/, 20_000);
    const { pids, workdir } = JSON.parse(json!) as { pids: number[]; workdir: string };
    orphans.push(...pids);
    // Nothing of the parent runs to remove its work dir (src/root/local.ts can't): the test does.
    removeWithChildren(workdir);
    expect(pids).toHaveLength(3);
    parent.kill("SIGKILL");
    await parent.waitExit(10_000);
    // They look for their parent every second, then stop the graceful way.
    expect(await waitGone(pids, 8000)).toEqual([]);
  }, 60_000);
});
