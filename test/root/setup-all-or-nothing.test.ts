import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { Root, SetupError, StateError } from "../../src/index.ts";
import * as tasks from "../fixtures/tasks/index.ts";
import { type RunningNode, startNode } from "../support/nodes.ts";
import { REPO, killAll } from "../support/processes.ts";

/** A setup takes every node or none, and never throws away items of a running pipeline unasked. */

const TASKS = join(REPO, "test/fixtures/tasks");
let nodes: RunningNode[];
const roots: Root[] = [];

beforeAll(async () => {
  nodes = await Promise.all([startNode({ workers: 1 }), startNode({ workers: 1 })]);
});

afterAll(async () => {
  await Promise.all(roots.map((root) => root.close()));
  await killAll();
});

/** A free loopback port: listened on, then closed, so nothing answers there. */
function deadAddress(): string {
  const server = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = server.port;
  server.stop(true);
  return `127.0.0.1:${port}`;
}

describe("setup", () => {
  test("that fails on one node (a dead address) releases the nodes it reached, at once", async () => {
    const first = new Root([...nodes.map((node) => node.addr), deadAddress()], { connectTimeoutMs: 2000 });
    roots.push(first);
    const failed = await first
      .setup("half", "1", [{ function: tasks.double }], { localPackages: [TASKS] })
      .catch((error: Error) => error);
    expect(failed).toBeInstanceOf(SetupError);
    // Another root gets both live nodes straight away (no NodeBusyError, no grace to wait out).
    const second = new Root(nodes.map((node) => node.addr));
    roots.push(second);
    const outputs: number[] = [];
    await second.setup("after", "1", [{ function: tasks.double }], {
      localPackages: [TASKS],
      outputHandler: (output) => void outputs.push(output as number),
    });
    await second.run([1, 2, 3]);
    expect(outputs.sort()).toEqual([2, 4, 6]);
    await second.reset();
  }, 60_000);

  test("while items are in flight is refused with a StateError, and with { replace: true } discards them", async () => {
    const root = new Root(nodes.map((node) => node.addr));
    roots.push(root);
    await root.setup("slow", "1", [{ function: tasks.sleepy }], { localPackages: [TASKS] });
    root.feedMany(Array.from({ length: 20_000 }, (_, id) => ({ id, ms: 1 })));
    const refused = await root
      .setup("other", "1", [{ function: tasks.double }], { localPackages: [TASKS] })
      .catch((error: Error) => error);
    expect(refused).toBeInstanceOf(StateError);
    expect((refused as Error).message).toContain("not finished");
    expect(root.progress.queued + root.progress.inFlight).toBeGreaterThan(0); // nothing was dropped

    const outputs: number[] = [];
    await root.setup("other", "1", [{ function: tasks.double }], {
      localPackages: [TASKS],
      replace: true,
      outputHandler: (output) => void outputs.push(output as number),
    });
    expect(root.progress.fed).toBe(0);
    await root.run([5]);
    expect(outputs).toEqual([10]);
    await root.reset();
  }, 60_000);
});
