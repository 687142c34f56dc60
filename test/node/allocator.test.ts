import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { NODE_ALLOCATOR_ENV } from "../../src/node/allocator.ts";
import { startLocalCluster } from "../../src/root/local.ts";
import { NodeTestClient } from "../support/node-client.ts";
import { nodeArgs, startNode, tearDown } from "../support/nodes.ts";

/**
 * A node runs with its allocator setting (src/node/allocator.ts): `pcluster node` started without it
 * replaces itself by a process with it (same pid, same arguments); Root.local gives it to its nodes.
 */

const clients: NodeTestClient[] = [];
afterAll(() => tearDown(clients, []), 20_000);

/** A process's environment, read from /proc. */
function environment(pid: number): Record<string, string> {
  const entries = readFileSync(`/proc/${pid}/environ`, "latin1").split("\0").filter(Boolean);
  return Object.fromEntries(
    entries.map((entry) => [entry.slice(0, entry.indexOf("=")), entry.slice(entry.indexOf("=") + 1)]),
  );
}

/** A process's arguments, read from /proc. */
function commandLine(pid: number): string[] {
  return readFileSync(`/proc/${pid}/cmdline`, "latin1").split("\0").filter(Boolean);
}

const unset = Object.fromEntries(Object.keys(NODE_ALLOCATOR_ENV).map((name) => [name, undefined]));

describe.skipIf(!existsSync("/proc/self/environ"))("a node's allocator setting", () => {
  test("a node started without it restarts itself with it: the same pid, the same arguments, and it serves", async () => {
    const node = await startNode({ workers: 1, env: unset, args: ["--quiet"] });
    const pid = node.proc.pid;
    const env = environment(pid);
    for (const [name, value] of Object.entries(NODE_ALLOCATOR_ENV)) expect(env[name]).toBe(value);
    // The same arguments, after Bun's path (which bun it is may be spelled otherwise).
    const args = commandLine(pid);
    expect(args.slice(1)).toEqual(nodeArgs({ workers: 1, args: ["--quiet"], workdir: node.workdir }));
    const client = await NodeTestClient.connect({ port: node.port, client: "allocator" });
    clients.push(client);
    const status = await client.status();
    expect(status.listen).toBe(node.addr);
    expect(status.workers).toBe(1);
  });

  test("a value the user set is kept", async () => {
    const chosen = Object.fromEntries(Object.keys(NODE_ALLOCATOR_ENV).map((name) => [name, "1"]));
    const node = await startNode({ workers: 1, env: chosen });
    const env = environment(node.proc.pid);
    for (const name of Object.keys(NODE_ALLOCATOR_ENV)) expect(env[name]).toBe("1");
  });

  test("Root.local starts its nodes with it", async () => {
    const cluster = await startLocalCluster({ nodes: 1, workers: 1 });
    try {
      const node = cluster.processes.find((process) => process.name === "node-0")!;
      const env = environment(node.pid);
      for (const [name, value] of Object.entries(NODE_ALLOCATOR_ENV)) expect(env[name]).toBe(value);
    } finally {
      await cluster.stop();
    }
  });
});
