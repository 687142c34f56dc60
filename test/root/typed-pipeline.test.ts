import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Root } from "../../src/index.ts";
import * as tasks from "../fixtures/tasks/index.ts";
import { type RunningNode, startNode } from "../support/nodes.ts";
import { REPO, killAll } from "../support/processes.ts";

/**
 * `setup` gives the very root it was called on, typed by the taskchain: the typed handle and the
 * original variable drive one pipeline. (What the types refuse is in test/types/chain.test-d.ts.)
 */

const TASKS = join(REPO, "test/fixtures/tasks");
const base = mkdtempSync(join(tmpdir(), "pcluster-typed-"));
let node: RunningNode;

beforeAll(async () => {
  node = await startNode({ workers: 1, workdir: join(base, "node") });
}, 30_000);
afterAll(async () => {
  await killAll();
  rmSync(base, { recursive: true, force: true });
});

test("setup returns the same root, typed: feed, process and outputHandler need no casts", async () => {
  await using cluster = new Root([node.addr]);
  const handled: string[] = [];
  const pipeline = await cluster.setup(
    "typed",
    "1",
    [{ function: tasks.parse }, { function: tasks.splitWords }, { function: tasks.Tagger, args: ["?"] }],
    { localPackages: [TASKS], outputHandler: (tagged) => void handled.push(tagged.toLowerCase()) },
  );
  expect(pipeline).toBe(cluster as typeof pipeline);

  pipeline.feed("1:alpha skip beta");
  await pipeline.waitEmpty();
  expect(handled.sort()).toEqual(["1.0:alpha?", "1.2:beta?"]);

  const seen: string[] = [];
  for await (const tagged of pipeline.process(["2:gamma", "3:skip delta"]))
    seen.push(tagged.slice(tagged.indexOf(":") + 1));
  expect(seen.sort()).toEqual(["DELTA?", "GAMMA?"]);
  expect(cluster.progress).toMatchObject({ fed: 3, done: 3, outputs: 4 });
});
