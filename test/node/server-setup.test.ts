import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { NodeBusyError } from "../../src/errors.ts";
import { defaultMemoryLimit } from "../../src/node/engine/memory-limit.ts";
import type { TaskStats } from "../../src/protocol/pipeline.ts";
import { messagesOf, waitForFile } from "../support/log-server.ts";
import { NodeTestClient, type PipelineSpec } from "../support/node-client.ts";
import { type RunningNode, runCli, startLogServer, startNode, writeProjectPackage } from "../support/nodes.ts";
import { REPO, type Spawned, killAll } from "../support/processes.ts";

/**
 * A log server and two `pcluster node` processes; a task package with an npm dependency of its own
 * (is-number) that logs through `import { log } from "pcluster"`; 2000 items through both nodes.
 * The processes are shared by the tests below, which run in order.
 */

const root = mkdtempSync(join(tmpdir(), "pcluster-server-setup-"));
const logFile = join(root, "cluster.log");
let logServer: Spawned;
let nodes: RunningNode[];
let packageDir: string;
const clients: NodeTestClient[] = [];

const PACKAGE = {
  "package.json": JSON.stringify({ name: "numbers", type: "module", dependencies: { "is-number": "^7.0.0" } }, null, 2),
  "index.ts": `
import isNumber from "is-number";
import { log } from "pcluster";

export function classify(item: { n: number; s: string }) {
  if (item.n % 400 === 399) throw new RangeError(\`item \${item.n} is cursed\`);
  if (item.n % 250 === 0) log(\`classify saw \${item.n}\`);
  return { n: item.n, s: item.s, numeric: isNumber(item.s) };
}

export function* fanOut(item: { n: number }) {
  yield { ...item, copy: 0 };
  if (item.n % 2 === 0) yield { ...item, copy: 1 };
}
`,
};

const pipeline = (): PipelineSpec => ({
  name: "numbers",
  version: "1.0",
  packages: [packageDir],
  tasks: ["numbers#classify", "numbers#fanOut"],
  remotePackages: [],
  workers: 2,
});

const item = (n: number) => ({ n, s: n % 3 === 0 ? `x${n}` : String(n) });
const cursed = (n: number) => n % 400 === 399;
function expectedOutputs(n: number): unknown[] {
  if (cursed(n)) return [];
  const out = { n, s: item(n).s, numeric: n % 3 !== 0 };
  return n % 2 === 0
    ? [
        { ...out, copy: 0 },
        { ...out, copy: 1 },
      ]
    : [{ ...out, copy: 0 }];
}

beforeAll(async () => {
  const log = await startLogServer(logFile);
  logServer = log.server;
  const [pkg, ...started] = await Promise.all([
    writeProjectPackage(root, "numbers", PACKAGE),
    startNode({ logPort: log.port, workers: 2 }),
    startNode({ logPort: log.port, workers: 2 }),
  ]);
  packageDir = pkg;
  nodes = started;
}, 60_000);

afterAll(async () => {
  for (const client of clients) client.close();
  await killAll();
  rmSync(root, { recursive: true, force: true });
  for (const node of nodes ?? []) rmSync(node.workdir, { recursive: true, force: true });
}, 60_000);

async function connect(port: number, client: string): Promise<NodeTestClient> {
  const connected = await NodeTestClient.connect({ port, client });
  clients.push(connected);
  return connected;
}

describe("two nodes, one pipeline each root", () => {
  let a: NodeTestClient;
  let b: NodeTestClient;
  /** Items fed to each node so far (for the status and benchmark numbers). */
  const fed = [0, 0];
  const failed = [0, 0];

  test("setup installs the package and its npm dependency on each node; 2000 items come back right", async () => {
    a = await connect(nodes[0]!.port, "test-root-a");
    b = await connect(nodes[1]!.port, "test-root-b");
    const [setupA, setupB] = await Promise.all([a.setup(pipeline()), b.setup(pipeline())]);
    for (const result of [setupA, setupB]) {
      expect(result.workers).toBe(2);
      expect(result.cached).toBe(false);
      expect(result.window.items).toBeGreaterThanOrEqual(1000);
    }
    // Installed into the pipeline's folder in the node's workdir, never into this repo.
    for (const node of nodes) {
      expect(existsSync(join(node.workdir, "pipelines", "numbers@1.0", "numbers", "node_modules", "is-number"))).toBe(
        true,
      );
    }
    expect(existsSync(join(REPO, "node_modules", "is-number"))).toBe(false);

    const numbers = Array.from({ length: 2000 }, (_, n) => n);
    const idsA = a.feed(numbers.slice(0, 1000).map(item));
    const idsB = b.feed(numbers.slice(1000).map(item));
    await Promise.all([a.waitDone(idsA), b.waitDone(idsB)]);
    fed[0]! += 1000;
    fed[1]! += 1000;
    failed[0] = numbers.slice(0, 1000).filter(cursed).length;
    failed[1] = numbers.slice(1000).filter(cursed).length;

    expect(a.outputsOf(idsA)).toEqual(numbers.slice(0, 1000).map(expectedOutputs));
    expect(b.outputsOf(idsB)).toEqual(numbers.slice(1000).map(expectedOutputs));
    expect(a.outputCount + b.outputCount).toBe(numbers.reduce((sum, n) => sum + expectedOutputs(n).length, 0));
    expect(a.connectionErrors).toEqual([]);
  }, 60_000);

  test("a throwing task reaches the client as a TaskError record with task name, message and stack", () => {
    // Two workers per node: errors from different workers arrive in either order.
    const ids = (errors: typeof a.errors) => errors.map((error) => error.id).sort((x, y) => x - y);
    expect(ids(a.errors)).toEqual([400, 800]); // items 399 and 799 (ids count from 1)
    expect(ids(b.errors)).toEqual([200, 600, 1000]); // items 1199, 1599, 1999
    for (const error of [...a.errors, ...b.errors]) {
      expect(error.kind).toBe("error");
      expect(error.task).toBe("classify");
      expect(error.stage).toBe(0);
      expect(error.message).toMatch(/item \d+ is cursed/);
      expect(error.stack).toContain("RangeError");
      expect(error.stack).toContain("classify");
    }
    expect(a.errors.find((error) => error.id === 400)!.message).toContain("item 399 is cursed");
  });

  test("the task's log() lines and the node's own setup and failed-item lines land in the log file", async () => {
    // Each node sends its lines over its own connection: wait for every line asserted below, not only
    // for the last ones of one node (node A's were still on their way when node B's came).
    const expected = [
      ...[0, 250, 500, 750, 1000, 1250, 1500, 1750].map((n) => `classify saw ${n}\n`),
      ...[400, 800, 1000].map((id) => `task "classify" dropped item ${id}:`),
      ...nodes.map((node) => `[node ${node.addr}] "numbers" 1.0 ready on 2 workers`),
    ];
    const text = await waitForFile(logFile, (t) => expected.every((line) => t.includes(line)));
    const [nodeA, nodeB] = nodes.map((node) => messagesOf(text, node.proc.pid));
    // Each task line comes from the node process (its workers are threads of it).
    expect(nodeA!.filter((m) => m.startsWith("classify saw")).sort()).toEqual(
      [0, 250, 500, 750].map((n) => `classify saw ${n}`),
    );
    expect(nodeB!.filter((m) => m.startsWith("classify saw")).sort()).toEqual(
      [1000, 1250, 1500, 1750].map((n) => `classify saw ${n}`),
    );
    for (const [i, messages] of [nodeA!, nodeB!].entries()) {
      const tag = `[node ${nodes[i]!.addr}]`;
      const owner = i === 0 ? "test-root-a" : "test-root-b";
      const limit = Math.round(defaultMemoryLimit() / 1048576);
      expect(messages).toContain(
        `${tag} listening on ${nodes[i]!.addr} (workers 2, memory limit ${limit} MB, workdir ${nodes[i]!.workdir})`,
      );
      expect(messages).toContain(`${tag} setting up "numbers" 1.0 for root ${owner}`);
      expect(messages).toContain(`${tag} "numbers" 1.0 ready on 2 workers`);
    }
    // One line (with continuation lines for the stack) per failed item, naming task, item and error.
    expect(text).toMatch(
      /\[node 127\.0\.0\.1:\d+\] task "classify" dropped item 400: .*item 399 is cursed\n(  .*\n)*  .*RangeError/,
    );
    for (const id of [400, 800])
      expect(nodeA!.some((m) => m.startsWith(`[node ${nodes[0]!.addr}] task "classify" dropped item ${id}:`))).toBe(
        true,
      );
  }, 60_000);

  test("the node also prints each failed item on its own console", async () => {
    await nodes[0]!.proc.waitFor(/task "classify" dropped item 400/, 3000);
  }, 60_000);

  test("a second root's setup is refused with NodeBusyError naming the pipeline, while the first keeps working", async () => {
    const intruder = await connect(nodes[0]!.port, "test-root-intruder");
    const more = Array.from({ length: 400 }, (_, i) => 3000 + i);
    // Items in flight on the first root's connection while the second is refused.
    const ids = a.feed(more.map(item));
    const refusal = intruder.setup(pipeline()).then(
      () => undefined,
      (error: Error) => error,
    );
    const error = await refusal;
    expect(error).toBeInstanceOf(NodeBusyError);
    expect(error!.message).toContain('pipeline "numbers" 1.0 for root test-root-a');
    expect(error!.message).toContain("one root at a time");
    await a.waitDone(ids);
    expect(a.outputsOf(ids)).toEqual(more.map(expectedOutputs));
    fed[0]! += more.length;
    failed[0]! += more.filter(cursed).length;

    // Status is answered to anyone: busy for the intruder, not for the owner.
    const [seen, own] = await Promise.all([intruder.status(), a.status()]);
    expect(seen.pipeline).toMatchObject({
      name: "numbers",
      version: "1.0",
      owner: "test-root-a",
      busy: true,
      workers: 2,
    });
    expect(own.pipeline).toMatchObject({ owner: "test-root-a", busy: false, awake: true });
    expect(own.listen).toBe(nodes[0]!.addr);
    // The intruder may not drive the pipeline either.
    await expect(intruder.request("waitEmpty")).rejects.toBeInstanceOf(NodeBusyError);
    await expect(intruder.request("reset")).rejects.toThrow(/for another root \(test-root-a\)/);
    intruder.close();
  }, 60_000);

  test("the node logs the refused setup of the second root (a refused client)", async () => {
    const tag = `[node ${nodes[0]!.addr}]`;
    const refused = (text: string) =>
      messagesOf(text, nodes[0]!.proc.pid).some((m) => m.startsWith(tag) && m.includes("test-root-intruder"));
    await waitForFile(logFile, refused, 3000);
    await nodes[0]!.proc.waitFor(/test-root-intruder/, 1000);
  }, 60_000);

  test("pcluster status and pcluster benchmark print the table with the numbers processed", async () => {
    const per = await Promise.all([a.status(), b.status()]);
    const byTask = (tasks: TaskStats[], name: string) => tasks.find((task) => task.task === name)!;
    for (const [i, status] of per.entries()) {
      const classify = byTask(status.pipeline!.tasks, "classify");
      expect(classify.processed).toBe(fed[i]! - failed[i]!);
      expect(classify.errors).toBe(failed[i]!);
      expect(byTask(status.pipeline!.tasks, "fanOut").processed).toBe(fed[i]! - failed[i]!);
    }

    const addrs = nodes.map((node) => node.addr).join(",");
    const status = await runCli(["status", "--nodes", addrs]);
    expect(status.code).toBe(0);
    const rows = status.stdout.trimEnd().split("\n");
    expect(rows[0]).toMatch(/^node\s+pid\s+pipeline\s+root\s+cores\s+workers\s+idle\s+state\s+started\s+memory\s+lag$/);
    expect(rows[1]).toMatch(
      new RegExp(
        `^${nodes[0]!.addr.replaceAll(".", "\\.")}\\s+${nodes[0]!.proc.pid}\\s+numbers 1\\.0\\s+test-root-a\\s+\\d+\\s+2\\s+\\d\\s+awake\\s+\\d{4}-\\S+\\s+\\d+ of \\d+ MB\\s+\\d+\\.\\d ms$`,
      ),
    );
    expect(rows[2]).toMatch(
      new RegExp(
        `^${nodes[1]!.addr.replaceAll(".", "\\.")}\\s+${nodes[1]!.proc.pid}\\s+numbers 1\\.0\\s+test-root-b\\s+\\d+\\s+2\\s+\\d\\s+awake`,
      ),
    );

    const benchmark = await runCli(["benchmark", "--nodes", addrs]);
    expect(benchmark.code).toBe(0);
    const lines = benchmark.stdout.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^task\s+processed\s+dropped\s+errors\s+total ms\s+mean ms$/);
    const total = fed[0]! + fed[1]!;
    const errors = failed[0]! + failed[1]!;
    const cells = (line: string) => line.trim().split(/\s{2,}/);
    expect(cells(lines[1]!).slice(0, 4)).toEqual(["classify", String(total - errors), "0", String(errors)]);
    expect(cells(lines[2]!).slice(0, 4)).toEqual(["fanOut", String(total - errors), "0", "0"]);
    const [, , , , totalMs, meanMs] = cells(lines[1]!).map(Number);
    expect(meanMs).toBeCloseTo(totalMs! / total, 2);

    const json = await runCli(["stats", "--nodes", addrs, "--json"]);
    expect(JSON.parse(json.stdout)).toMatchObject([
      { task: "classify", processed: total - errors, errors },
      { task: "fanOut", processed: total - errors, errors: 0 },
    ]);
  }, 60_000);

  test("reset frees the node, tells the root and logs it; the same code set up again is not reinstalled", async () => {
    expect(await a.request("reset")).toBeNull();
    await a.waitFor(() => a.events.some((event) => event.name === "reset"), 5000);
    expect(a.events.at(-1)).toMatchObject({
      t: "event",
      name: "reset",
      data: { why: "reset by its root test-root-a" },
    });
    expect((await a.status()).pipeline).toBeNull();
    const idle = await runCli(["status", "--nodes", nodes[0]!.addr]);
    expect(idle.stdout.split("\n")[1]).toMatch(/\(idle\)/);
    await waitForFile(logFile, (t) =>
      t.includes(`[node ${nodes[0]!.addr}] reset "numbers" 1.0: reset by its root test-root-a`),
    );

    const again = await a.setup(pipeline());
    expect(again.cached).toBe(true);
    const ids = a.feed([item(1), item(2)]);
    await a.waitDone(ids);
    expect(a.outputsOf(ids)).toEqual([expectedOutputs(1), expectedOutputs(2)]);
    await waitForFile(logFile, (t) => t.includes(`"numbers" 1.0 ready on 2 workers (code unchanged, not reinstalled)`));
  }, 60_000);

  test("log server stays the only sink: nothing was logged to the nodes' stderr as a fallback", () => {
    expect(logServer.proc.exitCode).toBeNull();
    for (const node of nodes) expect(node.proc.stderr).not.toContain("unavailable");
  });
});
