import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, readdirSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { NodeBusyError } from "../../src/errors.ts";
import { Root, type TaskError } from "../../src/index.ts";
import * as tasks from "../fixtures/tasks/index.ts";
import { waitForFile } from "../support/log-server.ts";
import { NodeTestClient, type PipelineSpec } from "../support/node-client.ts";
import { type RunningNode, runCli, startLogServer, startNode, tearDown } from "../support/nodes.ts";
import { REPO, type Spawned } from "../support/processes.ts";
import { waitFor, within } from "../support/wait.ts";

/** How a node's pipeline ends: its root goes away, the node is stopped, its log server dies. */

const root = mkdtempSync(join(tmpdir(), "pcluster-server-lifecycle-"));
const logFile = join(root, "cluster.log");
let logPort: number;
let node: RunningNode;
let packageDir: string;
const clients: NodeTestClient[] = [];
const workdirs: string[] = [];

const pipeline = (): PipelineSpec => ({
  name: "ticker",
  version: "1.0",
  packages: [packageDir],
  tasks: ["ticker#tick"],
});
const range = (from: number, count: number) => Array.from({ length: count }, (_, i) => from + i);

beforeAll(async () => {
  const log = await startLogServer(logFile);
  logPort = log.port;
  // --drain-timeout 0: SIGTERM stops it mid-run at once (a drain lets the items finish first: drain.test.ts).
  const started = startNode({ logPort, workers: 2, args: ["--drain-timeout", "0"] });
  [packageDir, node] = await Promise.all([join(REPO, "test/fixtures/ticker"), started]);
  workdirs.push(node.workdir);
}, 60_000);

afterAll(() => tearDown(clients, [root, ...workdirs]), 20_000);

async function connect(port: number, client: string): Promise<NodeTestClient> {
  const connected = await NodeTestClient.connect({ port, client });
  clients.push(connected);
  return connected;
}

async function expectTicks(client: NodeTestClient, numbers: number[]): Promise<void> {
  const ids = client.feed(numbers);
  await client.waitDone(ids);
  expect(client.outputsOf(ids)).toEqual(numbers.map((n) => [n * 10]));
}

test("when its root disconnects, the node keeps the pipeline for the grace period, then resets it and is free again", async () => {
  const owner = await connect(node.port, "root-gone");
  await owner.setup(pipeline());
  await expectTicks(owner, range(0, 50));
  owner.close();
  await owner.closed;
  const closedAt = Date.now();

  // Within the grace period the pipeline still belongs to the root that left.
  const next = await connect(node.port, "root-next");
  const busy = await next.setup(pipeline()).catch((error: Error) => error);
  expect(busy).toBeInstanceOf(NodeBusyError);
  expect((busy as Error).message).toContain('"ticker" 1.0 for root root-gone');
  await node.proc.waitFor(/root root-gone disconnected.*; resetting "ticker" 1\.0 in 3000 ms/, 5000);

  await waitFor(() => next.status(), {
    what: "the node to reset the orphaned pipeline",
    until: (status) => status.pipeline === null,
    everyMs: 50,
  });
  expect(Date.now() - closedAt).toBeGreaterThanOrEqual(2500);
  await waitForFile(
    logFile,
    (text) => text.includes(`[node ${node.addr}] reset "ticker" 1.0: its root root-gone is gone`),
    5000,
  );
  await waitForFile(
    logFile,
    (text) => text.includes(`[node ${node.addr}] root root-gone disconnected; resetting "ticker" 1.0 in 3000 ms`),
    5000,
  );

  const result = await next.setup(pipeline());
  expect(result.cached).toBe(true);
  await expectTicks(next, range(100, 50));
}, 60_000);

let stoppedOwner: NodeTestClient;

test("SIGTERM stops the running pipeline, exits with code 0 and frees the port", async () => {
  const owner = (stoppedOwner = clients.at(-1)!);
  const before = owner.done.size;
  const ids = owner.feed(range(1000, 2000));
  await owner.waitFor(() => owner.done.size > before + 20, 10_000);
  node.proc.kill("SIGTERM");
  expect(await node.proc.waitExit(10_000)).toBe(0);
  await owner.closed;
  expect(owner.done.size).toBeLessThan(before + ids.length); // it really was mid-run

  // The port can be listened on again at once.
  const listener = Bun.listen({ hostname: "127.0.0.1", port: node.port, socket: { data() {} } });
  expect(listener.port).toBe(node.port);
  listener.stop(true);
  await node.proc.drained;
  expect(node.proc.output).toContain(`reset "ticker" 1.0: the node is shutting down`);
}, 60_000);

test("the root of a node stopped with SIGTERM is told why its pipeline ended (a reset event) before the connection closes", () => {
  expect(stoppedOwner.events).toContainEqual({ t: "event", name: "reset", data: { why: "the node is shutting down" } });
});

test("a node stopped with SIGTERM still gets its last lines (the shutdown reset) to the log server", async () => {
  await waitForFile(
    logFile,
    (text) => text.includes(`[node ${node.addr}] reset "ticker" 1.0: the node is shutting down`),
    3000,
  );
}, 60_000);

test("a log server killed mid-run leaves tasks running; their lines go to the node's stderr instead", async () => {
  const ownLog = await startLogServer(join(root, "dying.log"));
  const logServer: Spawned = ownLog.server;
  const second = await startNode({ logPort: ownLog.port, workers: 2 });
  workdirs.push(second.workdir);
  const client = await connect(second.port, "root-logless");
  await client.setup(pipeline());

  const first = range(0, 600);
  const ids = client.feed(first);
  await client.waitFor(() => client.done.size >= 60, 10_000);
  logServer.kill("SIGKILL");
  await logServer.waitExit(5000);
  expect(client.done.size).toBeLessThan(first.length); // killed mid-run
  await client.waitDone(ids);
  expect(client.outputsOf(ids)).toEqual(first.map((n) => [n * 10]));

  // And later work runs too, with the log server still gone.
  await expectTicks(client, range(5000, 100));
  expect(second.proc.proc.exitCode).toBeNull();
  await second.proc.waitFor(/log server 127\.0\.0\.1:\d+ unavailable/, 5000);
  await second.proc.waitFor(/\] tick 5099\n/, 5000);
  // Lines logged before the kill made it to the file.
  await waitForFile(join(root, "dying.log"), (text) => text.includes("] tick 0\n"), 3000);
}, 60_000);

test("a root that falls silent with its socket open is taken for gone after --root-timeout; only it may come back within the grace", async () => {
  const watched = await startNode({ logPort, workers: 1, args: ["--root-timeout", "1", "--orphan-grace", "60"] });
  workdirs.push(watched.workdir);
  const owner = await connect(watched.port, "root-silent");
  await owner.setup(pipeline());
  // Whatever it sends is life: a look every 200 ms keeps it the owner well past the timeout.
  for (const until = performance.now() + 2500; performance.now() < until; ) {
    await owner.status();
    await Bun.sleep(200);
  }
  await expectTicks(owner, range(0, 20));
  expect(owner.isClosed).toBe(false);

  // Then it sends nothing, its socket still open: a stopped process, a hung one, a host or a network gone.
  await within(owner.closed, 10_000, "the node to close the silent root's connection");
  await watched.proc.waitFor(
    /root root-silent disconnected \(it sent nothing for 1000 ms\); resetting "ticker" 1\.0 in 60000 ms/,
    5000,
  );
  // Within the grace the pipeline is still its own: another root is refused, the same root is not.
  const other = await connect(watched.port, "root-other");
  expect(await other.setup(pipeline()).catch((error: Error) => error)).toBeInstanceOf(NodeBusyError);
  const back = await connect(watched.port, "root-silent");
  await back.setup(pipeline());
  await watched.proc.waitFor(/reset "ticker" 1\.0: set up again by its root root-silent, which came back/, 5000);
  await expectTicks(back, range(100, 20));
}, 60_000);

test("a connection that runs no pipeline here and falls silent is closed after --idle-timeout; the owner is judged by --root-timeout", async () => {
  const watched = await startNode({ logPort, workers: 1, args: ["--idle-timeout", "1", "--root-timeout", "60"] });
  workdirs.push(watched.workdir);
  const owner = await connect(watched.port, "root-owner");
  await owner.setup(pipeline());
  const looker = await connect(watched.port, "looker");
  const vanished = await connect(watched.port, "vanished");
  await vanished.status();
  // Whatever it sends is life: a look every 200 ms keeps a connection open well past the idle timeout.
  for (const until = performance.now() + 2500; performance.now() < until; ) {
    await looker.status();
    await Bun.sleep(200);
  }
  expect(looker.isClosed).toBe(false);

  // A peer that vanished without a word (its socket open, nothing sent) gives its place back.
  const why = await within(vanished.closed, 10_000, "the node to close the silent connection");
  expect(why?.message).toContain("the node closed this connection: idle for 1000 ms");
  await watched.proc.waitFor(/closing the connection of vanished: idle for 1000 ms/, 5000);
  await within(looker.closed, 10_000, "the node to close the looker's connection once it fell silent too");
  // The owner, as silent since its setup, is a root with a pipeline here: it keeps it, and it still runs.
  expect(owner.isClosed).toBe(false);
  await expectTicks(owner, range(0, 20));

  // A Root whose idle connection was closed dials again when it next needs the node.
  const cluster = new Root([`127.0.0.1:${watched.port}`]);
  try {
    expect((await cluster.status())[0]!.pipeline?.name).toBe("ticker");
    const me = `${hostname()}:${process.pid}`.replace(/[.]/g, "\\.");
    await watched.proc.waitFor(new RegExp(`closing the connection of ${me}: idle for 1000 ms`), 10_000);
    const again = await cluster.status();
    expect(again[0]!.pipeline?.name).toBe("ticker");
  } finally {
    await cluster.close();
  }
}, 60_000);

/** Pids of the running processes whose command line is exactly `args` (read from /proc). */
function running(args: string[]): number[] {
  const wanted = `${args.join("\0")}\0`;
  return readdirSync("/proc")
    .filter((name) => /^\d+$/.test(name))
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, "latin1") === wanted && !isZombie(Number(pid));
      } catch {
        return false; // gone meanwhile
      }
    })
    .map(Number);
}

/** Whether process `pid` ended and was not reaped (false when it is gone altogether). */
function isZombie(pid: number): boolean {
  try {
    return /^\S+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "latin1"));
  } catch {
    return false;
  }
}

/** Waits until no process runs `args` and process `parent` has no zombie child left (it reaped them). */
async function waitEndedAndReaped(args: string[], parent: number, what: string): Promise<void> {
  await waitFor(() => running(args), { what, until: (pids) => pids.length === 0 });
  const children = () =>
    readdirSync(`/proc/${parent}/task`).flatMap((tid) =>
      readFileSync(`/proc/${parent}/task/${tid}/children`, "latin1").split(" ").filter(Boolean).map(Number),
    );
  await waitFor(() => children().filter(isZombie), {
    what: `no zombie child of process ${parent}`,
    until: (zombies) => zombies.length === 0,
  });
}

test.skipIf(process.platform !== "linux")(
  "processes a task started end with its worker (task timeout) and with the pipeline (reset)",
  async () => {
    const own = await startNode({ logPort, workers: 1 });
    workdirs.push(own.workdir);
    const cluster = new Root([own.addr]);
    try {
      const errors: TaskError[] = [];
      const localPackages = [join(REPO, "test/fixtures/tasks")];
      // Stuck on a child that never ends: the worker is ended at the task timeout, and the child with it.
      const stuck = ["sleep", "311.5"];
      await cluster.setup("spawner", "1", [{ function: tasks.waitOnChild }], {
        localPackages,
        taskTimeoutMs: 1000,
        maxAttempts: 1,
        errorHandler: (error) => void errors.push(error),
      });
      cluster.feed({ seconds: 311.5 });
      await waitFor(() => running(stuck).length, { what: "the task's child to start", until: (n) => n === 1 });
      await cluster.waitEmpty();
      expect(errors.map((error) => error.failed)).toEqual([true]);
      // Reaped, too: the thread that started it is gone, and a zombie would stay for the node's lifetime.
      await waitEndedAndReaped(stuck, own.proc.proc.pid, "the ended worker's child to end");

      // Started and left running: it ends with the pipeline.
      const left = ["sleep", "312.5"];
      const outputs: number[] = [];
      await cluster.setup("spawner", "2", [{ function: tasks.leaveChild }], {
        localPackages,
        outputHandler: (output) => void outputs.push(output),
      });
      await cluster.run([{ seconds: 312.5 }]);
      expect(outputs).toEqual([312.5]);
      // It outlived its task. (The task returns once `sleep` is forked; the child may not have exec'd yet.)
      await waitFor(() => running(left), {
        what: "the task's child, left running",
        until: (pids) => pids.length === 1,
      });
      await cluster.reset();
      await waitEndedAndReaped(left, own.proc.proc.pid, "the child to end with the pipeline");
    } finally {
      await cluster.close();
    }
  },
  60_000,
);

test("bad sizes on the command line are refused, naming the flag, before anything listens", async () => {
  for (const [flag, value, message] of [
    ["--memory-limit", "0", '--memory-limit must be a positive whole number of MB, got "0"'],
    ["--memory-limit", "lots", '--memory-limit must be a positive whole number of MB, got "lots"'],
    ["--ring-bytes", "-5", '--ring-bytes must be a non-negative integer, got "-5"'],
    ["--root-timeout", "0", '--root-timeout must be a whole number of at least 1, got "0"'],
    ["--idle-timeout", "0", '--idle-timeout must be a whole number of at least 1, got "0"'],
  ] as const) {
    const result = await runCli(["node", "--host", "127.0.0.1", "--port", "0", flag, value]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(message);
    expect(result.stdout + result.stderr).not.toContain("listening on");
  }
});
