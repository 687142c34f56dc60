import { afterAll, beforeAll, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { NodeBusyError, ProtocolError, SetupError, StateError } from "../../src/errors.ts";
import { RecordBatchBuilder, encode } from "../../src/protocol/codec.ts";
import { RecordKind } from "../../src/protocol/record.ts";
import { frameOf } from "../../src/protocol/frame.ts";
import type { SetupArgs } from "../../src/protocol/pipeline.ts";
import { waitForFile } from "../support/log-server.ts";
import { NodeTestClient, type PipelineSpec, buildSetupArgs } from "../support/node-client.ts";
import { type RunningNode, startLogServer, startNode, tearDown, writeProjectPackage } from "../support/nodes.ts";
import { REPO } from "../support/processes.ts";
import { RawClient } from "../support/raw-client.ts";

/**
 * Bad input of every kind sent to a real node (started with a small --max-frame) while one root's
 * pipeline runs on it: each is refused with a clear error, and the root keeps getting its results.
 */

const MAX_FRAME = 64 * 1024;
const root = mkdtempSync(join(tmpdir(), "pcluster-server-bad-input-"));
const logFile = join(root, "cluster.log");
const workdir = join(root, "work");
let node: RunningNode;
/** A second node, for the checks that end a root's pipeline. */
let spareNode: RunningNode;
/** The root whose pipeline runs while the bad input arrives. */
let owner: NodeTestClient;
let packageDir: string;
const clients: NodeTestClient[] = [];

const pipeline = (): PipelineSpec => ({ name: "echo", version: "1", packages: [packageDir], tasks: ["echo#slowEcho"] });
const item = (i: number) => ({
  i,
  tag: "x".repeat(i % 50),
  bin: Uint8Array.of(i & 255, i >> 8),
  at: new Date(1_700_000_000_000 + i),
});

beforeAll(async () => {
  mkdirSync(workdir);
  mkdirSync(join(root, "spare"));
  const log = await startLogServer(logFile);
  [packageDir, node, spareNode] = await Promise.all([
    writeProjectPackage(root, "echo", {
      "package.json": JSON.stringify({ name: "echo", type: "module" }),
      "index.ts": "export async function slowEcho(item: unknown) {\n  await Bun.sleep(1);\n  return item;\n}\n",
    }),
    startNode({ logPort: log.port, workers: 2, workdir, maxFrameBytes: MAX_FRAME }),
    startNode({ logPort: log.port, workers: 1, workdir: join(root, "spare") }),
  ]);
}, 30_000);

afterAll(() => tearDown(clients, [root]), 20_000);

async function connect(client: string, port = node.port): Promise<NodeTestClient> {
  const connected = await NodeTestClient.connect({ port, client });
  clients.push(connected);
  return connected;
}

/** The err message a raw client gets, once the node has also closed the connection. */
async function refusal(client: RawClient): Promise<{ code: string; message: string }> {
  const message = await client.waitFor((m) => m.t === "err");
  await client.waitClosed();
  return message as { code: string; message: string };
}

/** Every file name under `dir`, recursively (links not followed). */
function allFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: false }) as string[];
}

/** Setup arguments of a real package plus one shipped file at `path`. */
async function withFile(path: string): Promise<SetupArgs> {
  const base = await buildSetupArgs({ ...pipeline(), name: "hostile" });
  const data = new TextEncoder().encode("// hostile payload\n");
  return { ...base, packages: [{ name: "echo", files: [...base.packages[0]!.files, { path, data }] }] };
}

/** Nothing landed outside a package folder, let alone outside the work dir. */
function expectNothingEscaped(): void {
  for (const name of allFiles(root)) expect(name).not.toMatch(/escape\.js$/);
  expect(existsSync(join(workdir, "pipelines", "hostile@1", "escape.js"))).toBe(false);
  expect(readFileSync(join(REPO, "src", "index.ts"), "utf8")).not.toContain("hostile payload");
  expect(allFiles(root).filter((name) => name.startsWith("evil") || name.includes("/evil"))).toEqual([]);
}

test("hostile package paths, names and installer flags are refused; nothing is written outside the work dir", async () => {
  const hostile = await connect("root-hostile");
  const base = await buildSetupArgs({ ...pipeline(), name: "hostile" });
  const cases: Array<[SetupArgs, RegExp]> = [
    [
      await withFile("../escape.js"),
      /refused to write "\.\.\/escape\.js" of package "echo": it would land outside the pipeline folder \(it has a '\.\.' segment\)/,
    ],
    [await withFile("../../../../escape.js"), /refused to write "\.\.\/\.\.\/\.\.\/\.\.\/escape\.js" .*'\.\.' segment/],
    [await withFile("lib/../../escape.js"), /'\.\.' segment/],
    [await withFile(join(root, "absolute-escape.js")), /it is absolute/],
    [
      await withFile("node_modules/pcluster/src/index.ts"),
      /inside node_modules\/ or \.git\/, which only the node writes/,
    ],
    [
      { ...base, packages: [{ ...base.packages[0]!, name: "../evil" }] },
      /package name "\.\.\/evil" cannot be a folder name: it contains a path separator/,
    ],
    [{ ...base, name: "../up" }, /pipeline name "\.\.\/up" cannot be a folder name/],
    [{ ...base, remotePackages: ["--global"] }, /remote package "--global" is refused: it starts with '-'/],
  ];
  for (const [args, why] of cases) {
    const error = await hostile.setup(args).catch((e: Error) => e);
    expect(error).toBeInstanceOf(SetupError);
    expect((error as Error).message).toMatch(why);
    expect((await hostile.status()).pipeline).toBeNull(); // a failed setup leaves the node free
  }

  expectNothingEscaped();

  const text = await waitForFile(logFile, (t) => t.includes('remote package "--global" is refused'), 5000);
  expect(text).toContain(
    `[node ${node.addr}] setup of "hostile" 1 for root root-hostile failed: refused to write "../escape.js"`,
  );
  hostile.close();
}, 30_000);

test("garbage, oversized frames, unknown commands and messages, and other roots' feeds are refused while the owner's items keep coming", async () => {
  owner = await connect("root-owner");
  await owner.setup(pipeline());
  const first = Array.from({ length: 3000 }, (_, i) => i);
  const ids = owner.feed(first.map(item), { batchItems: 200 });

  // Before the handshake: bytes that are no frame, a frame that is no MessagePack, a frame over --max-frame.
  const [garbage, notMsgpack, oversized] = await Promise.all([1, 2, 3].map(() => RawClient.connect(node.port)));
  garbage.write("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  notMsgpack.write(frameOf(Uint8Array.of(0xc1, 0xc1, 0xc1)));
  oversized.write(Uint8Array.of(0, 0x10, 0, 0, 1, 2, 3)); // claims 1 MiB
  const [garbageError, notMsgpackError, oversizedError] = await Promise.all(
    [garbage, notMsgpack, oversized].map(refusal),
  );
  expect(garbageError).toMatchObject({
    code: "protocol",
    message: expect.stringMatching(/frame length \d+ exceeds the maximum of 65536 bytes/),
  });
  expect(notMsgpackError).toMatchObject({
    code: "protocol",
    message: expect.stringContaining("frame body is not valid MessagePack"),
  });
  expect(oversizedError.message).toContain("frame length 1048576 exceeds the maximum of 65536 bytes");

  // After the handshake: an unknown command and bad setup arguments are answered, the connection stays.
  const rude = await connect("root-rude");
  await expect(rude.request("dance")).rejects.toThrow(/unknown command "dance"; a node takes ping, status, setup/);
  const badSetup = await rude.request("setup", { name: 5 }).catch((e: Error) => e);
  expect(badSetup).toBeInstanceOf(ProtocolError);
  expect((badSetup as Error).message).toBe('command "setup": field "name" must be a string, got 5');
  const badTimeout = await rude
    .request("setup", { ...(await buildSetupArgs(pipeline())), taskTimeoutMs: -5 })
    .catch((e: Error) => e);
  expect(badTimeout).toBeInstanceOf(ProtocolError);
  expect((badTimeout as Error).message).toMatch(/^command "setup": field "taskTimeoutMs" must be .*, got -5$/);
  expect(await rude.request("ping")).toBe("pong");
  // Credit from a root that owns nothing changes nothing.
  rude.grant(1 << 30);
  // A message that is not one closes the connection, with why.
  rude.connection.send({ t: "dance" } as never);
  await rude.closed;
  expect(rude.connectionErrors[0]?.message).toMatch(/unknown message type "dance"; expected one of hello, auth/);

  // A hostile package sent while the node is busy is refused as busy before any file is looked at.
  const [hostile, badBlob, results, bigFrame, thief] = await Promise.all(
    ["root-hostile-2", "root-badblob", "root-results", "root-big", "root-thief"].map((name) => connect(name)),
  );
  await expect(hostile!.setup(await withFile("../../../../escape.js"))).rejects.toBeInstanceOf(NodeBusyError);
  expectNothingEscaped();
  badBlob!.connection.send({ t: "feed", blob: "not binary" } as never);
  results!.connection.send({ t: "results", blob: new Uint8Array(0), idle: 0 });
  const big = new Uint8Array(4 + 100_000);
  new DataView(big.buffer).setUint32(0, 100_000);
  bigFrame!.connection.sendFrame(big);
  const theirs = thief!.feed([item(1)]);
  await Promise.all([badBlob, results, bigFrame, thief].map((client) => client!.closed));
  expect(badBlob!.connectionErrors[0]?.message).toBe(
    'message "feed": field "blob" must be binary (bin), got "not binary"',
  );
  expect(results!.connectionErrors[0]?.message).toBe('a node does not take "results" messages outside the handshake');
  expect(bigFrame!.connectionErrors[0]?.message).toContain("frame length 100000 exceeds the maximum of 65536 bytes");
  expect(thief!.connectionErrors[0]).toBeInstanceOf(NodeBusyError);
  expect(thief!.connectionErrors[0]?.message).toBe(
    'cannot feed: this node runs pipeline "echo" 1 for another root (root-owner)',
  );
  expect(thief!.done.has(theirs[0]!)).toBe(false);

  // The owner lost nothing and was told of nothing.
  await owner.waitDone(ids, 30_000);
  expect(owner.outputsOf(ids)).toEqual(first.map((i) => [item(i)]));
  const more = Array.from({ length: 200 }, (_, i) => 10_000 + i);
  const moreIds = owner.feed(more.map(item));
  await owner.waitDone(moreIds);
  expect(owner.outputsOf(moreIds)).toEqual(more.map((i) => [item(i)]));
  expect(owner.connectionErrors).toEqual([]);
  expect(owner.isClosed).toBe(false);
  expect(owner.outputCount).toBe(first.length + more.length);

  // Each refused client is logged, to the log server and to the node's console.
  const text = await waitForFile(logFile, (t) => t.includes("refused a feed from"), 5000);
  expect(text).toContain(`[node ${node.addr}] refused 127.0.0.1: frame length`);
  expect(text).toContain(`[node ${node.addr}] refused 127.0.0.1: frame body is not valid MessagePack`);
  expect(text).toContain(
    `[node ${node.addr}] refused a feed from 127.0.0.1: cannot feed: this node runs pipeline "echo" 1 for another root`,
  );
  await node.proc.waitFor(/refused 127\.0\.0\.1: frame length 1048576 exceeds the maximum/, 3000);
}, 40_000);

/** A feed blob of one Input record whose header is written by hand. */
function record(kind: number, stage: number, claimedLength: number, payload = encode(1)): Uint8Array {
  const blob = new Uint8Array(12 + payload.length);
  const view = new DataView(blob.buffer);
  view.setUint8(0, kind);
  view.setUint8(1, stage);
  view.setUint32(4, 7, true);
  view.setUint32(8, claimedLength, true);
  blob.set(payload, 12);
  return blob;
}

/** Sets the pipeline up as soon as the node is free (bounded): a failed owner's pipeline is reset after a grace period. */
async function setupWhenFree(client: NodeTestClient): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const error = await client.setup(pipeline()).then(
      () => undefined,
      (e: Error) => e,
    );
    if (error === undefined) return;
    expect(error).toBeInstanceOf(NodeBusyError);
    if (Date.now() > deadline) throw new Error(`the node was not free again within 10 s: ${error.message}`);
    await Bun.sleep(200);
  }
}

/** Each variant from a new owner of the node (the first from `first`, which owns it already). */
async function sendMalformed(
  first: NodeTestClient,
  port: number,
  variants: Array<[Uint8Array, string]>,
): Promise<void> {
  for (const [index, [blob, message]] of variants.entries()) {
    const owner = index === 0 ? first : await connect(`root-malformed-${port}-${index}`, port);
    if (index > 0) await setupWhenFree(owner);
    const fine = owner.feed([item(1), item(2)]);
    await owner.waitDone(fine);
    const builder = new RecordBatchBuilder();
    builder.appendRecords(blob, 1);
    owner.connection.sendFrame(builder.finishFrame("feed"));
    await owner.closed;
    expect(owner.connectionErrors[0]).toBeInstanceOf(ProtocolError);
    expect(owner.connectionErrors[0]?.message).toBe(message);
  }
}

test("a malformed feed blob is refused with a clear error, and the node is free again after the grace period", async () => {
  const early = await connect("root-early", spareNode.port);
  early.feed([1]);
  await early.closed;
  expect(early.connectionErrors[0]).toBeInstanceOf(StateError);
  expect(early.connectionErrors[0]?.message).toBe("cannot feed: no pipeline is set up on this node");

  const spare = await connect("root-spare", spareNode.port);
  await spare.setup(pipeline());
  // Two nodes, so that the two grace periods run side by side.
  await Promise.all([
    sendMalformed(owner, node.port, [
      [record(RecordKind.Input, 0, 1000), "feed: record 0 at offset 0 claims 1000 bytes, more than the batch holds"],
      [record(RecordKind.Output, 0, 1), "feed: record 0 at offset 0 is not an input item (kind 2, flags 0)"],
    ]),
    sendMalformed(spare, spareNode.port, [
      [record(RecordKind.Input, 3, 1), "feed: record 0 starts at task 3, but the taskchain has 1"],
      [new Uint8Array(7), "feed: record header at offset 0 is cut short"],
    ]),
  ]);
  const text = await waitForFile(logFile, (t) => t.includes("is not an input item"), 5000);
  expect(text).toContain(
    `[node ${node.addr}] refused a feed from 127.0.0.1: feed: record 0 at offset 0 claims 1000 bytes`,
  );
  expect(text).toContain(
    `[node ${node.addr}] root root-owner disconnected (feed: record 0 at offset 0 claims 1000 bytes, more than the batch holds); resetting "echo" 1 in 3000 ms`,
  );
  expect(text).toContain(`[node ${node.addr}] reset "echo" 1: its root root-owner is gone`);
}, 30_000);
