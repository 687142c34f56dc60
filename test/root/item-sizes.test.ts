import { afterAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { Root } from "../../src/index.ts";
import * as tasks from "../fixtures/tasks/index.ts";
import { NodeTestClient } from "../support/node-client.ts";
import { type RunningNode, startNode, tearDown } from "../support/nodes.ts";
import { REPO } from "../support/processes.ts";
import { seededRandom } from "../support/random.ts";

/**
 * Real-size items never cost a healthy node: the root never sends past a node's byte grant (an item
 * larger than the whole grant goes alone), and a node that is sent past it anyway refuses that frame,
 * gives the items back, and keeps the connection.
 */

const TASKS = join(REPO, "test/fixtures/tasks");
const clients: NodeTestClient[] = [];
const roots: Root[] = [];

afterAll(async () => {
  await Promise.all(roots.map((root) => root.close()));
  await tearDown(clients, []);
}, 20_000);

/** Runs `items` through `padLength` on `root`, and returns each output's count by value and the progress. */
async function runPads(root: Root, items: Array<{ ms?: number; pad?: string }>) {
  const counts = new Map<number, number>();
  await root.setup("pads", "1", [{ function: tasks.padLength }], {
    localPackages: [TASKS],
    outputHandler: (length) => {
      counts.set(length as number, (counts.get(length as number) ?? 0) + 1);
    },
  });
  await root.run(items);
  return counts;
}

describe("items of a few hundred KB to megabytes", () => {
  test("one node, one worker busy on a slow item: 12 × 200 KB and a 3 MB item wait for room instead of losing the node", async () => {
    const node = await startNode({ workers: 1 });
    const root = new Root([node.addr]);
    roots.push(root);
    const items = [
      { ms: 1500 },
      ...Array.from({ length: 12 }, () => ({ pad: "p".repeat(200_000) })),
      { pad: "q".repeat(3_000_000) },
    ];
    const counts = await runPads(root, items);
    expect(Object.fromEntries(counts)).toEqual({ 0: 1, 200000: 12, 3000000: 1 });
    expect(root.progress.resent).toBe(0);
    const [report] = await root.status();
    expect(report?.pipeline?.name).toBe("pads"); // still this root's node
  }, 60_000);

  test("items of 10 B to 8 MB mixed with slow ones through 2 nodes: every output once, no node dropped", async () => {
    const nodes: RunningNode[] = await Promise.all([startNode({ workers: 1 }), startNode({ workers: 1 })]);
    const root = new Root(nodes.map((node) => node.addr));
    roots.push(root);
    const random = seededRandom(12);
    const items: Array<{ ms?: number; pad: string }> = [];
    for (let i = 0; i < 80; i++) {
      const size = Math.round(10 * 800_000 ** random()); // 10 B … 8 MB, spread evenly on a log scale
      items.push(i % 8 === 0 ? { ms: 200, pad: "s".repeat(size) } : { pad: "x".repeat(size) });
    }
    items.push({ pad: "y".repeat(8_000_000) });
    const expected = new Map<number, number>();
    for (const item of items) expected.set(item.pad.length, (expected.get(item.pad.length) ?? 0) + 1);
    const counts = await runPads(root, items);
    expect(Object.fromEntries(counts)).toEqual(Object.fromEntries(expected));
    expect(root.progress.resent).toBe(0);
    expect((await root.status()).length).toBe(2);
  }, 90_000);
});

describe("a feed past the grant", () => {
  test("is refused and given back, and the connection goes on", async () => {
    const node = await startNode({ workers: 1 });
    const client = await NodeTestClient.connect({ port: node.port, client: "root-greedy" });
    clients.push(client);
    const { window } = await client.setup({
      name: "pads",
      version: "1",
      packages: [TASKS],
      tasks: [{ function: tasks.padLength }],
    });
    // One frame with more bytes than the whole grant, several items: a root with a bug.
    const pad = "z".repeat(Math.ceil(window.bytes / 3));
    const refusedIds = client.feed([{ pad }, { pad }, { pad }, { pad }], { batchItems: 4 });
    await client.waitFor(
      () => client.events.some((event) => event.name === "refused"),
      10_000,
      () => "a refusal",
    );
    const refusal = client.events.find((event) => event.name === "refused")!;
    const data = refusal.data as { ids: Uint8Array; reason: string };
    const view = new DataView(data.ids.buffer, data.ids.byteOffset, data.ids.byteLength);
    expect(Array.from({ length: data.ids.length / 4 }, (_, i) => view.getUint32(i * 4, true))).toEqual(refusedIds);
    expect(data.reason).toContain("past the window it granted");
    // Nothing of the refused frame runs; the same connection is still served.
    const ids = client.feed([{ pad: "ok" }, { pad }]);
    await client.waitDone(ids);
    expect(client.outputsOf(ids)).toEqual([[2], [pad.length]]);
    expect(refusedIds.some((id) => client.done.has(id))).toBe(false);
    expect((await client.status()).pipeline?.inFlight).toBe(0);
  }, 60_000);
});
