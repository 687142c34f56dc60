import { afterAll, expect, test } from "bun:test";
import { killAll, spawnBun } from "../support/processes.ts";

/**
 * A task package that imports `log` from "pcluster" loads the whole public surface in every Worker
 * thread of every node. Its third-party packages (consola, cli-progress, ipaddr.js, msgpackr) serve the
 * root's diagnostics, progress bar and discovery, or items msgpack's small subset does not cover: they
 * load when first used, not with the import, so that a worker starts in less CPU.
 */

/** The third-party modules a fresh process has loaded after running `script` (an ES module body). */
async function packagesLoadedBy(script: string): Promise<string[]> {
  const listing = "console.log(JSON.stringify(Object.keys(require.cache).filter((k) => k.includes('node_modules'))));";
  const proc = spawnBun(["-e", `${script}\n${listing}`]);
  const code = await proc.waitExit(20_000);
  await proc.drained;
  expect(proc.stderr).toBe("");
  expect(code).toBe(0);
  return JSON.parse(proc.stdout.trim().split("\n").at(-1)!) as string[];
}

afterAll(() => killAll());

test('import { log } from "pcluster" loads no third-party package', async () => {
  expect(await packagesLoadedBy('const { log, Root } = await import("pcluster"); log("x"); void Root;')).toEqual([]);
});

test('import "pcluster" leaves the parts only some programs use to their first use', async () => {
  // Each Worker thread of a task that imports `log` loads what this loads: the root's dashboard, metrics,
  // discovery, local cluster and progress bar made that a sixth larger.
  const listing = "console.log(JSON.stringify(Object.keys(require.cache).filter((k) => k.includes('/src/'))));";
  const proc = spawnBun(["-e", `const { log, Root } = await import("pcluster"); void log; void Root;\n${listing}`]);
  expect(await proc.waitExit(20_000)).toBe(0);
  await proc.drained;
  const loaded = (JSON.parse(proc.stdout.trim().split("\n").at(-1)!) as string[]).map((path) => path.split("/src/")[1]);
  expect(loaded).toContain("root/root.ts"); // the listing sees the modules the import loaded
  for (const part of [
    "root/dashboard/server.ts",
    "root/metrics.ts",
    "root/discovery.ts",
    "root/local.ts",
    "root/progress-bar.ts",
  ]) {
    expect(loaded).not.toContain(part);
  }
});

test("each one loads where it is first needed: diagnostics, the progress bar, a network scan, a large item", async () => {
  const loaded = await packagesLoadedBy(`
    const { diagnostics } = await import("./src/diagnostics.ts");
    diagnostics();
    const { showProgress } = await import("./src/root/progress-bar.ts");
    const { Writable } = await import("node:stream");
    const sink = new Writable({ write: (_chunk, _encoding, done) => done() });
    showProgress({ stream: sink }, [1], () => ({ done: 1, outputs: 0, errors: 0 }))?.[Symbol.dispose]();
    const { scanForNodes } = await import("./src/root/discovery.ts");
    await scanForNodes({ network: "127.0.0.7/32", port: 1, timeoutMs: 100 });
    const { encodeItem } = await import("./src/protocol/codec.ts");
    encodeItem(new Array(100_000).fill(1)); // longer than the small writer takes
  `);
  const names = new Set(loaded.map((path) => path.split("/node_modules/")[1]!.split("/")[0]));
  for (const name of ["cli-progress", "consola", "ipaddr.js", "msgpackr"]) expect(names).toContain(name);
});
