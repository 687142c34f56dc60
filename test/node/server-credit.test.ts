import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { parseAddress } from "../../src/protocol/address.ts";
import { RecordBatchBuilder, encode } from "../../src/protocol/codec.ts";
import { RecordKind, RecordReader, forEachDone } from "../../src/protocol/record.ts";
import { NodeClient } from "../../src/root/node-client.ts";
import { NodeTestClient, type PipelineSpec, buildSetupArgs, resultsFrameBytes } from "../support/node-client.ts";
import { GateProxy } from "../support/gate-proxy.ts";
import { type RunningNode, startNode, tearDown } from "../support/nodes.ts";
import { REPO } from "../support/processes.ts";
import { waitFor } from "../support/wait.ts";

/**
 * Result credit: a node sends results only while the root's credit (`resultWindow`, given back with
 * `credit` messages as the root handles frames) lasts.
 */

let node: RunningNode;
let packageDir: string;
const clients: NodeTestClient[] = [];
const proxies: GateProxy[] = [];

const pipeline = (task: string, resultWindow: number): PipelineSpec => ({
  name: task,
  version: "1",
  packages: [packageDir],
  tasks: [`sizes#${task}`],
  resultWindow,
});

beforeAll(async () => {
  [packageDir, node] = await Promise.all([join(REPO, "test/fixtures/sizes"), startNode({ workers: 2 })]);
}, 60_000);

afterAll(async () => {
  for (const proxy of proxies) proxy.stop();
  await tearDown(clients, [node?.workdir]);
}, 20_000);

test("the node stops sending results when the root's credit runs out, and goes on when it is given more", async () => {
  const client = await NodeTestClient.connect({ port: node.port, client: "root-stingy", autoCredit: false });
  clients.push(client);
  const window = 64 * 1024;
  await client.setup(pipeline("pad", window));
  // ~1 MB of results, in few enough items that all of them reach the workers while nothing is read
  // (a worker's queue holds 16 items until their Done is read) and fit in their output rings (1 MiB).
  const sizes = Array.from({ length: 24 }, () => 40_000);
  const ids = client.feed(sizes);
  // The node sends until the credit is spent (at most one results batch beyond it), then pauses.
  await client.waitFor(
    () => client.resultBytes >= window,
    10_000,
    () => `${client.resultBytes} result bytes`,
  );
  // Every item runs, and still the node holds their results back. A status reply comes after every
  // results frame sent before it, on the same connection: once the node says all ran, what arrived is
  // all it sent, and the next reply shows it sent nothing more.
  const ran = await waitFor(() => client.status(), {
    what: "the node to run every item",
    until: (status) => status.pipeline!.tasks[0]!.processed === ids.length,
    show: () => `${client.resultBytes} result bytes`,
  });
  const stalledAt = client.resultBytes;
  expect(stalledAt).toBeLessThan(window + 300 * 1024);
  expect(client.done.size).toBeLessThan(ids.length);
  expect(ran.pipeline!.inFlight).toBeGreaterThan(0);
  expect((await client.status()).pipeline!.inFlight).toBe(ran.pipeline!.inFlight);
  expect(client.resultBytes).toBe(stalledAt);

  client.autoCredit = true;
  client.grant(client.resultBytes);
  await client.waitDone(ids);
  expect(client.outputsOf(ids).map((outputs) => (outputs[0] as string).length)).toEqual(sizes);
  await client.request("reset");
  client.close();
  await client.closed;
}, 60_000);

test("a root that stops reading holds the node's results in a bounded queue; the node serves others meanwhile, and sends them all once it reads", async () => {
  // Between the two, a proxy that stops reading the node's side when shut: the node's results back up in
  // the kernel, then in the node's own queue. With credit to spare (64 MiB), what pauses the results
  // is that queue's bound (4 MiB), and it must pause them without holding the node's thread: once
  // waiting on a queue of 4 to 8 MiB spun the node at 100% CPU, deaf to everyone, for good.
  const proxy = GateProxy.start(node.port);
  proxies.push(proxy);
  const client = await NodeTestClient.connect({ port: proxy.port, client: "root-deaf" });
  clients.push(client);
  await client.setup(pipeline("pad", 64 * 1024 * 1024));
  proxy.shut();
  const sizes = Array.from({ length: 24 }, () => 1_000_000);
  const ids = client.feed(sizes);
  const other = await NodeTestClient.connect({ port: node.port, client: "root-other", timeoutMs: 10_000 });
  clients.push(other);
  await waitFor(() => other.status(), {
    what: "the node to run every item while its root reads nothing, and to tell another client so",
    until: (status) => status.pipeline!.tasks[0]!.processed === ids.length,
    timeoutMs: 30_000,
    everyMs: 50,
  });
  expect(client.done.size).toBeLessThan(ids.length);

  proxy.open();
  await client.waitDone(ids, 30_000);
  expect(client.outputsOf(ids).map((outputs) => outputs.map((output) => (output as string).length))).toEqual(
    sizes.map((size) => [size]),
  );
  await client.request("reset");
}, 90_000);

test("a root's NodeClient gives back the credit the node charged, so a long run of small result frames never stalls", async () => {
  const args = await buildSetupArgs(pipeline("same", 2048));
  const client = await NodeClient.connect(parseAddress(node.addr), {});
  try {
    const done = new Set<number>();
    const credited: Array<[given: number, charged: number]> = [];
    client.onResults = (blob, idle, standing, frameBytes) => {
      credited.push([frameBytes, resultsFrameBytes(blob, idle, standing ? 1 : 0)]); // a node always sends standing
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
      client.sendFeed([batch.finishFrame("feed")]);
      await waitFor(() => done.has(id), {
        what: `item ${id} to come back (the node may have run out of credit)`,
        timeoutMs: 2000,
        everyMs: 1,
        show: () => {
          const [given, charged] = credited.at(-1) ?? [0, 0];
          return `${credited.length} results frames, the last one charged ${charged} bytes, the client gave back ${given}`;
        },
      });
    }
  } finally {
    client.close();
  }
}, 60_000);

test("a results frame says whether items stood waiting on the node since the last: a backlog does, a trickle never", async () => {
  const client = await NodeTestClient.connect({ port: node.port, client: "root-standing" });
  clients.push(client);
  // The test before closed its root's connection: the node lets that root's pipeline go after its
  // orphan grace (3 s, for a root that comes back).
  await waitFor(() => client.status(), {
    what: "the node to be free",
    until: (status) => status.pipeline === null,
    timeoutMs: 20_000,
  });
  await client.setup({
    name: "standing",
    version: "1",
    packages: [join(REPO, "test/fixtures/engine-tasks")],
    tasks: ["engine-tasks#blockMs"],
  });
  // A trickle: each item fed once the one before is done. Nothing ever waits for a worker's queue.
  for (let i = 0; i < 10; i++) {
    const [id] = client.feed([{ ms: 5 }]);
    await client.waitFor(
      () => client.done.has(id!),
      10_000,
      () => `item ${id} of the trickle`,
    );
  }
  expect(client.standingFrames).toBe(0);
  // 80 items of 10 ms at once on 2 workers, whose queues hold a few each once their time is known:
  // the rest waits on the node for most of a second, across many results frames.
  const ids = client.feed(Array.from({ length: 80 }, () => ({ ms: 10 })));
  await client.waitFor(
    () => ids.every((id) => client.done.has(id)),
    30_000,
    () => `${client.done.size} items done`,
  );
  expect(client.standingFrames).toBeGreaterThan(0);
}, 60_000);
