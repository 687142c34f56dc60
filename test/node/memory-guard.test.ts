import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Root, type TaskError } from "../../src/index.ts";
import * as tasks from "../fixtures/tasks/index.ts";
import { type RunningNode, startNode, tearDown } from "../support/nodes.ts";
import { REPO } from "../support/processes.ts";

/**
 * The memory guard ends the worker whose own heap grows, on a real node: a memory hog beside a slow,
 * innocent item costs the hog's item only, however long the innocent one has been running.
 */

const TASKS = join(REPO, "test/fixtures/tasks");
const dir = mkdtempSync(join(tmpdir(), "pcluster-memory-guard-"));
let node: RunningNode;
let root: Root | undefined;

beforeAll(async () => {
  // A fresh node of 2 workers peaks near 65 MB; the hog passes 250 MB within a second or two.
  node = await startNode({ workers: 2, args: ["--memory-limit", "250"] });
}, 30_000);

afterAll(async () => {
  await root?.close().catch(() => {});
  await tearDown([], [node?.workdir, dir]);
}, 20_000);

async function waitUntil(condition: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(50);
  }
}

test("a memory hog beside an item that has run longer: only the hog's item is given up", async () => {
  const outputs: unknown[] = [];
  const errors: TaskError[] = [];
  const gate = join(dir, "gate");
  root = new Root([["127.0.0.1", node.port]]);
  // Items go through hogOn (which passes all but "hog" on), then wait at the gate.
  await root.setup("blame", "1", [{ function: tasks.hogOn }, { function: tasks.gated }], {
    localPackages: [TASKS],
    outputHandler: (output) => void outputs.push(output),
    errorHandler: (error) => void errors.push(error),
    maxAttempts: 2,
  });
  root.feed({ gate, id: 7 });
  // The innocent item runs on one worker before the hog arrives on the other, and stays on it until the
  // hog's item is given up: all along, it is the item that has run the longest.
  await waitUntil(async () => (await root!.status())[0]!.pipeline!.idleWorkers === 1, 10_000, "the slow item to start");
  root.feed("hog");
  await waitUntil(() => errors.length > 0, 45_000, "an item to be given up");
  writeFileSync(gate, "");
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<string>((resolve) => (timer = setTimeout(() => resolve("timed out"), 15_000)));
  expect(await Promise.race([root.waitEmpty().then(() => "done"), timeout])).toBe("done");
  clearTimeout(timer);

  expect(outputs).toEqual([{ id: 7 }]);
  expect(errors.map((error) => [error.task, error.failed])).toEqual([["hogOn", true]]);
  expect(errors[0]!.message).toMatch(
    /: gave up after 2 attempts, each of which took its worker down: the node's memory reached \d+ MB, over its limit of 250 MB \(pcluster node --memory-limit\), and this worker's own heap held about \d+ MB, the most of any worker$/,
  );
  const [report] = await root.status();
  expect(report!.pipeline!.workersReplaced).toBe(2);
  expect(node.proc.proc.exitCode).toBeNull();
}, 90_000);
