import { afterAll, beforeAll, describe, expect, spyOn, test } from "bun:test";
import { mkdtemp, realpath, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { dial } from "../../src/protocol/handshake.ts";
import type { Connection } from "../../src/protocol/connection.ts";
import type { SetupArgs } from "../../src/protocol/pipeline.ts";
import { resolveName, scanForNodes } from "../../src/root/discovery.ts";
import { Root } from "../../src/root/root.ts";
import { pipelineHash, readLocalPackages, resolveTaskchain } from "../../src/root/packager.ts";
import { tryNodeAt } from "../support/nodes.ts";
import { type Spawned, killAll } from "../support/processes.ts";

/**
 * Real node processes on 127.0.0.2 and 127.0.0.3 (Linux routes all of 127/8 to loopback), scanned
 * over 127.0.0.0/24. Nothing beyond loopback is ever contacted.
 */

const TOKEN = "scan-secret";
let temp: string;
let port: number;
let owner: Connection | undefined;

/** A node on `host:port`, or undefined when it could not listen there (the port is taken). */
function tryNode(host: string, nodePort: number, extra: string[] = []): Promise<Spawned | undefined> {
  return tryNodeAt(host, nodePort, join(temp, `node-${host.replaceAll(/[^0-9a-f]/g, "_")}-${nodePort}`), extra);
}

/** A free port of 127.0.0.1 (nothing listens there once this returns). */
function freePort(): number {
  const listener = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const free = listener.port;
  listener.stop(true);
  return free;
}

const canBindIPv6 = (() => {
  try {
    Bun.listen({ hostname: "::1", port: 0, socket: { data() {} } }).stop(true);
    return true;
  } catch {
    return false;
  }
})();

beforeAll(async () => {
  temp = await realpath(await mkdtemp(join(tmpdir(), "pcluster-discovery-")));
  // The same port on three loopback addresses; another port if any of them is taken.
  for (let attempt = 0; attempt < 8; attempt++) {
    port = 20_000 + Math.floor(Math.random() * 40_000);
    const started = await Promise.all([
      tryNode("127.0.0.2", port),
      tryNode("127.0.0.3", port),
      tryNode("127.0.0.4", port, ["--token", TOKEN]),
    ]);
    if (started.every((proc) => proc !== undefined)) return;
    await killAll();
  }
  throw new Error("could not start nodes on one port of 127.0.0.2, .3 and .4 in 8 attempts");
}, 60_000);

afterAll(async () => {
  owner?.close();
  await killAll();
  await rm(temp, { recursive: true, force: true });
});

describe("scanForNodes", () => {
  test("finds the idle nodes of a /24, sorted, and lists a node that wants a token under refused", async () => {
    const result = await scanForNodes({ network: "127.0.0.0/24", port });
    expect(result.idle.map((node) => node.address)).toEqual([`127.0.0.2:${port}`, `127.0.0.3:${port}`]);
    expect(result.busy).toEqual([]);
    expect(result.refused.map((node) => node.address)).toEqual([`127.0.0.4:${port}`]);
    expect(result.refused[0]!.reason).toContain("token");
    const [first] = result.idle;
    expect(first).toMatchObject({ host: "127.0.0.2", port });
    expect(first!.status).toMatchObject({ listen: `127.0.0.2:${port}`, workers: 1, pipeline: null });
  });

  test("with the token, the node that wants it is idle; a wrong token is refused", async () => {
    const withToken = await scanForNodes({ network: "127.0.0.0/24", port, token: TOKEN });
    expect(withToken.idle.map((node) => node.address)).toEqual([
      `127.0.0.2:${port}`,
      `127.0.0.3:${port}`,
      `127.0.0.4:${port}`,
    ]);
    expect(withToken.refused).toEqual([]);
    const wrong = await scanForNodes({ network: "127.0.0.0/29", port, token: "not-it" });
    expect(wrong.refused.map((node) => node.address)).toEqual([`127.0.0.4:${port}`]);
    expect(wrong.refused[0]!.reason).toContain("wrong token");
  });

  test("skips what is not a pcluster node: a silent server, one that talks another protocol", async () => {
    const silent = Bun.listen({ hostname: "127.0.0.5", port, socket: { data() {} } });
    const banner = Bun.listen({
      hostname: "127.0.0.6",
      port,
      socket: {
        open(socket) {
          socket.write("SSH-2.0-OpenSSH_9.6\r\n");
        },
        data() {},
      },
    });
    try {
      // Neither holds the scan past its greeting bound; how long a scan takes is bench/discovery.bench.ts's.
      const result = await scanForNodes({ network: "127.0.0.0/24", port, timeoutMs: 200 });
      expect(result.idle.map((node) => node.address)).toEqual([`127.0.0.2:${port}`, `127.0.0.3:${port}`]);
      expect(result.busy).toEqual([]);
      expect(result.refused.map((node) => node.address)).toEqual([`127.0.0.4:${port}`]);
    } finally {
      silent.stop(true);
      banner.stop(true);
    }
  });

  test("a node running another root's pipeline is listed under busy, with its pipeline", async () => {
    const pkg = join(temp, "scan_tasks");
    await Bun.write(join(pkg, "package.json"), JSON.stringify({ name: "scan-tasks", type: "module" }));
    await writeFile(join(pkg, "index.ts"), "export function identity(item: unknown) { return item; }\n");
    const packages = await readLocalPackages([pkg]);
    const bundles = packages.map((local) => local.bundle);
    const args: SetupArgs = {
      name: "scan-pipeline",
      version: "2.0",
      taskchain: await resolveTaskchain([{ function: "scan_tasks#identity" }], packages),
      packages: bundles,
      remotePackages: [],
      hash: pipelineHash(bundles, []),
      workers: 1,
    };
    ({ connection: owner } = await dial({
      hostname: "127.0.0.3",
      port,
      service: "node",
      client: "discovery-test-root",
    }));
    await owner.request("setup", args, 30_000);

    const result = await scanForNodes({ network: "127.0.0.0/24", port });
    expect(result.idle.map((node) => node.address)).toEqual([`127.0.0.2:${port}`]);
    expect(result.busy.map((node) => node.address)).toEqual([`127.0.0.3:${port}`]);
    expect(result.busy[0]!.status.pipeline).toMatchObject({
      name: "scan-pipeline",
      version: "2.0",
      owner: "discovery-test-root",
      busy: true,
    });
  }, 60_000);

  test("a /24 without nodes on the port is scanned to its end and finds nothing", async () => {
    // How long it takes (every address refuses at once: well under a second) is bench/discovery.bench.ts's.
    const empty = freePort();
    const result = await scanForNodes({ network: "127.0.0.0/24", port: empty });
    expect(result).toEqual({ idle: [], busy: [], refused: [] });
  });

  test("a /24 where every address accepts and never answers is scanned to its end and finds nothing", async () => {
    const mutePort = freePort();
    const mute: Array<{ stop(closeActive?: boolean): void }> = [];
    for (let host = 1; host < 255; host++) {
      try {
        mute.push(Bun.listen({ hostname: `127.0.0.${host}`, port: mutePort, socket: { data() {} } }));
      } catch {
        // taken on this address by someone else: it is then not mute, and not a node of ours either
      }
    }
    try {
      expect(mute.length).toBeGreaterThan(200);
      // Each address costs the greeting timeout at most; bun run bench discovery measures the whole.
      const result = await scanForNodes({ network: "127.0.0.0/24", port: mutePort });
      expect(result).toEqual({ idle: [], busy: [], refused: [] });
    } finally {
      for (const listener of mute) listener.stop(true);
    }
  }, 20_000);

  test("a network too large to scan is refused before anything is contacted", async () => {
    // If the check were missing, this stops any connection from leaving the process.
    const connect = spyOn(Bun, "connect").mockImplementation(() => {
      throw new Error("the scan tried to connect");
    });
    try {
      const scan = scanForNodes({ network: "10.0.0.0/8", port });
      await expect(scan).rejects.toThrow(RangeError);
      await expect(scan).rejects.toThrow(/narrow the network/);
      await expect(scanForNodes({ network: "fd00::/64", port })).rejects.toThrow(RangeError);
      expect(connect).not.toHaveBeenCalled();
    } finally {
      connect.mockRestore();
    }
  });

  test("bad networks and options are refused with a TypeError", async () => {
    await expect(scanForNodes({ network: "127.0.0.1", port })).rejects.toThrow(/CIDR/);
    await expect(scanForNodes({ network: "127.0.0.0/33", port })).rejects.toThrow(TypeError);
    await expect(scanForNodes({ network: "127.0.0.0/30", port: 0 })).rejects.toThrow(/port/);
    await expect(scanForNodes({ network: "127.0.0.0/30", port, concurrency: 0 })).rejects.toThrow(/concurrency/);
  });

  test("asks every address a DNS name resolves to: localhost finds a node on 127.0.0.1", async () => {
    const node = await tryNode("127.0.0.1", 0);
    expect(node).toBeDefined();
    const [, nodePort] = await node!.waitFor(/listening on 127\.0\.0\.1:(\d+)/);
    const result = await scanForNodes({ dns: "localhost", port: Number(nodePort) });
    expect(result.idle.map((found) => found.address)).toEqual([`127.0.0.1:${nodePort}`]);
    expect(result.idle[0]!.status).toMatchObject({ listen: `127.0.0.1:${nodePort}`, pipeline: null });
    expect(await resolveName("localhost")).toContain("127.0.0.1");

    const root = new Root([], { token: undefined });
    try {
      expect(await root.searchNodes({ dns: "localhost", port: Number(nodePort) })).toBe(1);
      expect(root.nodes).toEqual([`127.0.0.1:${nodePort}`]);
    } finally {
      await root.close();
      node!.kill("SIGKILL");
    }
  }, 20_000);

  test("a scan needs a network or a name", async () => {
    await expect(scanForNodes({ dns: " ", port })).rejects.toThrow(/nothing to scan/);
    await expect(scanForNodes({ port } as unknown as Parameters<typeof scanForNodes>[0])).rejects.toThrow(TypeError);
  });

  test.skipIf(!canBindIPv6)(
    "scans IPv6: ::1/128 finds a node on ::1",
    async () => {
      const node = await tryNode("::1", 0);
      expect(node).toBeDefined();
      const [, v6Port] = await node!.waitFor(/listening on \[::1\]:(\d+)/);
      const result = await scanForNodes({ network: "::1/128", port: Number(v6Port) });
      expect(result.idle.map((found) => found.address)).toEqual([`[::1]:${v6Port}`]);
      expect(result.idle[0]).toMatchObject({ host: "::1", port: Number(v6Port) });
      node!.kill("SIGKILL");
    },
    60_000,
  );
});
