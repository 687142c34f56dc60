import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { lstat, mkdir, mkdtemp, readdir, realpath, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cacheEntryName, installPipeline } from "../../src/node/packages.ts";
import type { PackageBundle } from "../../src/protocol/pipeline.ts";

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
