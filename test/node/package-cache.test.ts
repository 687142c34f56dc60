import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { lstat, mkdir, mkdtemp, readdir, realpath, rm, stat, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cacheEntryName, installPipeline, pruneHostCache, releaseCacheEntry } from "../../src/node/packages.ts";
import type { PackageBundle } from "../../src/protocol/pipeline.ts";
import { NodeTestClient } from "../support/node-client.ts";
import { startNode, tearDown } from "../support/nodes.ts";
import { waitFor } from "../support/wait.ts";

/** The nodes of one host share installed pipelines by content: one install, linked from every node. */
let temp: string;

const encoder = new TextEncoder();
const tasks: PackageBundle = {
  name: "tasks",
  files: [
    { path: "package.json", data: encoder.encode(JSON.stringify({ name: "tasks", type: "module", main: "index.ts" })) },
    { path: "index.ts", data: encoder.encode("export function triple(n: number) { return n * 3; }\n") },
  ],
};

const install = (node: string, hash = "hash-1") =>
  installPipeline({
    workdir: join(temp, node),
    name: "shared",
    version: "1.0",
    packages: [tasks],
    remotePackages: [],
    hash,
  });

const cacheEntries = async () => readdir(join(temp, ".pcluster-cache"));

beforeAll(async () => {
  temp = await realpath(await mkdtemp(join(tmpdir(), "pcluster-cache-")));
});
afterAll(async () => {
  await rm(temp, { recursive: true, force: true });
});

describe("the host's cache of installed pipelines", () => {
  test("two nodes with one parent folder install once: the second links to the first's install", async () => {
    const first = await install("node-0");
    const marker = await stat(join(first.dir, ".pcluster-hash"));
    const second = await install("node-1");
    expect(second.dir).toBe(join(temp, "node-1", "pipelines", "shared@1.0"));
    expect((await lstat(second.dir)).isSymbolicLink()).toBe(true);
    expect(await realpath(second.dir)).toBe(await realpath(first.dir));
    // Nothing was written again: the first install's marker is the very same file.
    const again = await stat(join(second.dir, ".pcluster-hash"));
    expect(again.ino).toBe(marker.ino);
    expect(again.mtimeMs).toBe(marker.mtimeMs);
    expect(await cacheEntries()).toHaveLength(1);
    const module = (await import(second.entries.tasks!)) as { triple(n: number): number };
    expect(module.triple(5)).toBe(15);
    // The same setup again on the second node is a no-op.
    expect((await install("node-1")).skipped).toBe(true);
  });

  test("a new hash is a new entry; a node moves to it, another keeps the old one", async () => {
    const moved = await install("node-1", "hash-2");
    expect(moved.skipped).toBe(false);
    const kept = await install("node-0");
    expect(kept.skipped).toBe(true);
    expect(await realpath(moved.dir)).not.toBe(await realpath(kept.dir));
    expect(await cacheEntries()).toHaveLength(2);
  });

  test("nodes setting up the same pipeline at once all succeed, on one whole install, leaving no half-built folder", async () => {
    const nodes = Array.from({ length: 8 }, (_, i) => `racer-${i}`);
    const installs = await Promise.all(nodes.map((node) => install(node, "hash-race")));
    const targets = new Set(await Promise.all(installs.map((installed) => realpath(installed.dir))));
    expect(targets.size).toBe(1);
    const entries = await cacheEntries();
    expect(entries.filter((entry) => entry.includes(".building-"))).toEqual([]);
    expect(entries).toHaveLength(3);
    for (const installed of installs) {
      const module = (await import(installed.entries.tasks!)) as { triple(n: number): number };
      expect(module.triple(2)).toBe(6);
    }
  });
});

describe("one install per entry on a host", () => {
  const failing: PackageBundle = {
    name: "failing",
    files: [
      {
        path: "package.json",
        data: encoder.encode(JSON.stringify({ name: "failing", dependencies: { absent: "file:./no-such-folder" } })),
      },
      { path: "index.ts", data: encoder.encode("export const x = 1;\n") },
    ],
  };

  /** Sets the failing pipeline up on `node`: "installed", or the error's message. */
  const installFailing = (node: string) =>
    installPipeline({
      workdir: join(temp, node),
      name: "failing",
      version: "1.0",
      packages: [failing],
      remotePackages: [],
      hash: "hash-failing",
    }).then(
      () => "installed",
      (error: Error) => error.message,
    );

  test("nodes setting up at once wait for one node's install: one installer runs, the others share its failure", async () => {
    const outcomes = await Promise.all(Array.from({ length: 6 }, (_, i) => installFailing(`failing-${i}`)));
    const ran = outcomes.filter((message) => message.startsWith('installing the dependencies of package "failing"'));
    const shared = outcomes.filter((message) => message.startsWith("another node of this host failed"));
    expect(ran).toHaveLength(1);
    expect(shared).toHaveLength(outcomes.length - 1);
    for (const message of shared) expect(message).toContain("failed to resolve");
    const entries = await cacheEntries();
    expect(entries.filter((entry) => entry.endsWith(".lock") || entry.includes(".building-"))).toEqual([]);
    // A node that sets up after that failure tries afresh (the user may have fixed what failed).
    const later = await installFailing("failing-later");
    expect(later).toStartWith('installing the dependencies of package "failing"');
  });

  test("a lock left by a process that died is taken over", async () => {
    const dead = Bun.spawn(["true"]);
    await dead.exited;
    const entry = join(temp, ".pcluster-cache", cacheEntryName("shared", "1.0", "hash-orphaned"));
    await mkdir(`${entry}.lock`, { recursive: true });
    await writeFile(join(`${entry}.lock`, "pid"), String(dead.pid));
    const installed = await install("orphan-node", "hash-orphaned");
    expect(installed.skipped).toBe(false);
    expect(await realpath(installed.dir)).toBe(await realpath(entry));
    expect(await cacheEntries()).not.toContain(`${cacheEntryName("shared", "1.0", "hash-orphaned")}.lock`);
  });
});

describe("a host's cache stays bounded", () => {
  const exists = (path: string) =>
    stat(path).then(
      () => true,
      () => false,
    );

  test("pruning keeps the entries used last and every one a live process runs, and removes the rest", async () => {
    const parent = await realpath(await mkdtemp(join(tmpdir(), "pcluster-prune-")));
    try {
      const workdir = join(parent, "node-0");
      const entries: string[] = [];
      for (let i = 0; i < 5; i++) {
        const installed = await installPipeline({
          workdir,
          name: "p",
          version: "1",
          packages: [tasks],
          remotePackages: [],
          hash: `h${i}`,
        });
        expect(installed.cacheEntry).toBeDefined();
        entries.push(installed.cacheEntry!);
        await releaseCacheEntry(installed.cacheEntry!); // its pipeline was reset
      }
      // The oldest is run by a live process (this one); the next by one that is gone.
      const dead = Bun.spawn(["true"]);
      await dead.exited;
      await writeFile(join(entries[0]!, ".pcluster-in-use", String(process.pid)), "");
      await writeFile(join(entries[1]!, ".pcluster-in-use", String(dead.pid)), "");
      // Entry i last used i minutes after the first.
      const first = Date.now() / 1000 - 3600;
      for (const [i, entry] of entries.entries()) await utimes(join(entry, ".pcluster-in-use"), first, first + 60 * i);
      // A removal that a node died in the middle of.
      const leftover = join(parent, ".pcluster-cache", `.removing-${dead.pid}-0badc0de`);
      await mkdir(join(leftover, "tasks"), { recursive: true });

      const removed = await pruneHostCache(workdir, 2);
      expect(removed.sort()).toEqual([entries[1]!, entries[2]!].sort());
      expect(await Promise.all(entries.map(exists))).toEqual([true, false, false, true, true]);
      expect(await exists(leftover)).toBe(false);
      // Nothing half-removed or locked is left, and a second look removes nothing more.
      const names = await readdir(join(parent, ".pcluster-cache"));
      expect(names.filter((name) => name.startsWith(".removing-") || name.endsWith(".lock"))).toEqual([]);
      expect(await pruneHostCache(workdir, 2)).toEqual([]);
      await expect(pruneHostCache(workdir, 0)).rejects.toThrow("keep must be a whole number of at least 1, got 0");
    } finally {
      await rm(parent, { recursive: true, force: true });
    }
  });

  test("pruning also removes this node's links to the pipelines it removed, and nothing else in pipelines/", async () => {
    const parent = await realpath(await mkdtemp(join(tmpdir(), "pcluster-prune-links-")));
    try {
      const workdir = join(parent, "node-0");
      const first = Date.now() / 1000 - 3600;
      for (const [i, name] of ["p", "q", "r"].entries()) {
        const installed = await installPipeline({
          workdir,
          name,
          version: "1",
          packages: [tasks],
          remotePackages: [],
          hash: `l${i}`,
        });
        await releaseCacheEntry(installed.cacheEntry!);
        await utimes(join(installed.cacheEntry!, ".pcluster-in-use"), first, first + 60 * i); // r used last
      }
      await mkdir(join(workdir, "pipelines", "own@1"), { recursive: true }); // installed without the cache
      expect((await pruneHostCache(workdir, 1)).length).toBe(2);
      expect((await readdir(join(workdir, "pipelines"))).sort()).toEqual(["own@1", "r@1"]);
      expect((await lstat(join(workdir, "pipelines", "r@1"))).isSymbolicLink()).toBe(true);
    } finally {
      await rm(parent, { recursive: true, force: true });
    }
  });

  test("with --keep-pipelines, a node's setup removes old code no node runs, never the code another node runs; new code under the same name runs", async () => {
    const parent = await realpath(await mkdtemp(join(tmpdir(), "pcluster-keep-")));
    const clients: NodeTestClient[] = [];
    try {
      /** Version `n` of the code: a package whose task tags each item with `n`. */
      const code = async (n: number) => {
        const dir = join(parent, `code-${n}`, "tasks");
        await mkdir(dir, { recursive: true });
        await writeFile(join(dir, "package.json"), JSON.stringify({ name: "tasks", type: "module", main: "index.ts" }));
        await writeFile(join(dir, "index.ts"), `export function tag(x: number) { return x * 1000 + ${n}; }\n`);
        return { name: "code", version: "1", packages: [dir], tasks: ["tasks#tag"] };
      };
      const [a, b] = await Promise.all(
        ["node-a", "node-b"].map((name) =>
          startNode({ workers: 1, workdir: join(parent, name), args: ["--keep-pipelines", "1"] }),
        ),
      );
      const runner = await NodeTestClient.connect({ port: a.port, client: "root-a" });
      const changer = await NodeTestClient.connect({ port: b.port, client: "root-b" });
      clients.push(runner, changer);
      await runner.setup(await code(0)); // node A runs version 0 all along
      // Node B moves on, version after version, under one name and version: each time the new code runs.
      for (let n = 1; n <= 3; n++) {
        await changer.setup(await code(n));
        const ids = changer.feed([7]);
        await changer.waitDone(ids);
        expect(changer.outputsOf(ids)).toEqual([[7000 + n]]);
      }

      const cache = join(parent, ".pcluster-cache");
      const installed = async () => {
        const names = await readdir(cache);
        const kept = await Promise.all(names.map((name) => exists(join(cache, name, ".pcluster-hash"))));
        return names.filter((_, i) => kept[i]).sort();
      };
      // What node A and node B run now; B's old versions went as it set up the next.
      const running = [
        await realpath(join(parent, "node-a", "pipelines", "code@1")),
        await realpath(join(parent, "node-b", "pipelines", "code@1")),
      ].map((entry) => entry.slice(cache.length + 1));
      await waitFor(installed, {
        what: "the cache to hold only what the nodes run",
        until: (names) => names.length === 2,
      });
      expect(await installed()).toEqual(running.sort());
      await b.proc.waitFor(/removed 1 installed pipelines no node runs from the host's cache: code@1-/, 5000);
      // Node A's code is still whole: its items still run on it.
      const ids = runner.feed([1, 2]);
      await runner.waitDone(ids);
      expect(runner.outputsOf(ids)).toEqual([[1000], [2000]]);
    } finally {
      await tearDown(clients, [parent]);
    }
  }, 60_000);
});
