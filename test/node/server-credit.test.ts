import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseAddress } from "../../src/protocol/address.ts";
import { RecordBatchBuilder, encode } from "../../src/protocol/codec.ts";
import { RecordKind, RecordReader, forEachDone } from "../../src/protocol/record.ts";
import { NodeClient } from "../../src/root/node-client.ts";
import { NodeTestClient, type PipelineSpec, buildSetupArgs, resultsFrameBytes } from "../support/node-client.ts";
import { type RunningNode, startNode, tearDown, writeProjectPackage } from "../support/nodes.ts";

/**
 * Result credit: a node sends results only while the root's credit (`resultWindow`, given back with
 * `credit` messages as the root handles frames) lasts.
 */

const root = mkdtempSync(join(tmpdir(), "pcluster-server-credit-"));
let node: RunningNode;
let packageDir: string;
const clients: NodeTestClient[] = [];

const pipeline = (task: string, resultWindow: number): PipelineSpec => ({
  name: task,
  version: "1",
  packages: [packageDir],
  tasks: [`sizes#${task}`],
  resultWindow,
});

beforeAll(async () => {
  [packageDir, node] = await Promise.all([
    writeProjectPackage(root, "sizes", {
      "package.json": JSON.stringify({ name: "sizes", type: "module" }),
      "index.ts": [
        "/** A string of `size` bytes: large outputs, to run the node out of credit. */",
        'export function pad(size: number) {\n  return "x".repeat(size);\n}',
        "export function same(item: unknown) {\n  return item;\n}",
        "",
      ].join("\n"),
    }),
    startNode({ workers: 2 }),
  ]);
}, 30_000);

afterAll(() => tearDown(clients, [root, node?.workdir]), 20_000);

test("the node stops sending results when the root's credit runs out, and goes on when it is given more", async () => {
  const client = await NodeTestClient.connect({ port: node.port, client: "root-stingy", autoCredit: false });
  clients.push(client);
  const window = 64 * 1024;
  await client.setup(pipeline("pad", window));
  const sizes = Array.from({ length: 100 }, () => 10_000); // ~1 MB of results
  const ids = client.feed(sizes);
  // The node sends until the credit is spent (at most one results batch beyond it), then pauses.
  await client.waitFor(
    () => client.resultBytes >= window,
    10_000,
    () => `${client.resultBytes} result bytes`,
  );
  await Bun.sleep(300);
  const stalledAt = client.resultBytes;
  expect(stalledAt).toBeLessThan(window + 300 * 1024);
  expect(client.done.size).toBeLessThan(ids.length);
  expect((await client.status()).pipeline!.inFlight).toBeGreaterThan(0);
  await Bun.sleep(300);
  expect(client.resultBytes).toBe(stalledAt);

  client.autoCredit = true;
  client.grant(client.resultBytes);
  await client.waitDone(ids);
  expect(client.outputsOf(ids).map((outputs) => (outputs[0] as string).length)).toEqual(sizes);
  await client.request("reset");
  client.close();
  await client.closed;
}, 30_000);

test("a root's NodeClient gives back the credit the node charged, so a long run of small result frames never stalls", async () => {
  const args = await buildSetupArgs(pipeline("same", 2048));
  const client = await NodeClient.connect(parseAddress(node.addr), {});
  try {
    const done = new Set<number>();
    const credited: Array<[given: number, charged: number]> = [];
    client.onResults = (blob, idle, frameBytes) => {
      credited.push([frameBytes, resultsFrameBytes(blob, idle)]);
      const reader = new RecordReader(blob);
      while (reader.next()) {
        if (reader.kind === RecordKind.Done)
          forEachDone(blob, reader.payloadStart, reader.payloadEnd, (id) => done.add(id));
      }
      client.credit(frameBytes); // what the root does once a frame is handled
    };
    await client.request("setup", args, 30_000);
    // One item at a time, as a root feeding from a slow source does: one small results frame each.
    for (let id = 1; id <= 300; id++) {
      const batch = new RecordBatchBuilder();
      batch.append(RecordKind.Input, 0, 0, id, encode({ id }));
      client.sendFeed(batch.finishFrame("feed"));
      const deadline = Date.now() + 2000;
      while (!done.has(id)) {
        if (Date.now() > deadline) {
          const [given, charged] = credited.at(-1) ?? [0, 0];
          throw new Error(
            `item ${id} never came back: the node ran out of credit after ${credited.length} results frames ` +
              `(the last one charged ${charged} bytes, the client gave back ${given})`,
          );
        }
        await Bun.sleep(1);
      }
    }
  } finally {
    client.close();
  }
}, 30_000);
