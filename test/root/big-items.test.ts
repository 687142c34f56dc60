import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ItemTooLargeError, Root, TaskError } from "../../src/index.ts";
import { encodeItem } from "../../src/protocol/codec.ts";
import * as tasks from "../fixtures/big-items/index.ts";
import * as fixtureTasks from "../fixtures/tasks/index.ts";
import { type RunningNode, runCli, startNode, tearDown } from "../support/nodes.ts";
import { REPO } from "../support/processes.ts";
import { waitFor } from "../support/wait.ts";

/**
 * Items and outputs of any size up to `maxItemBytes` pass split across frames, however small the
 * frames: nothing about one item's size costs a node. Items over the limit are refused at `feed`, and
 * outputs over it are task errors for their items while the others go on.
 */

const TASKS = join(REPO, "test/fixtures/big-items");
const MIB = 1024 * 1024;
const roots: Root[] = [];
/** 8 MiB frames: a 70 MB item is nine of them. */
let smallFrames: RunningNode;
/** A node that takes items of up to 6 MB only (`--max-item`). */
let smallItems: RunningNode;
/** Two workers, as nodes have: large items go to both at once, through memory the node keeps. */
let twoWorkers: RunningNode;
/** Two workers with rings of 256 KiB: their byte grant (2 MiB) holds no item of 3 MiB. */
let smallRings: RunningNode;
/** Gates and marks the tasks' items name. */
const dir = mkdtempSync(join(tmpdir(), "pcluster-big-items-"));

beforeAll(async () => {
  [smallFrames, smallItems, twoWorkers, smallRings] = await Promise.all([
    startNode({ workers: 1, maxFrameBytes: 8 * MIB }),
    startNode({ workers: 1, args: ["--max-item", "6000000"] }),
    startNode({ workers: 2 }),
    startNode({ workers: 2, args: ["--ring-bytes", "262144"] }),
  ]);
}, 30_000);

afterAll(async () => {
  await Promise.all(roots.map((root) => root.close()));
  const nodes = [smallFrames, smallItems, twoWorkers, smallRings];
  await tearDown([], [dir, ...nodes.map((node) => node?.workdir)]);
}, 20_000);

function newRoot(node: RunningNode, options: ConstructorParameters<typeof Root>[1] = {}): Root {
  const root = new Root([node.addr], options);
  roots.push(root);
  return root;
}

/** `size` bytes that are not all alike (so a part out of place or a lost one changes the hash). */
function bytesOf(size: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    bytes[i] = x & 0xff;
    bytes[i + 1] = (x >>> 8) & 0xff;
    bytes[i + 2] = (x >>> 16) & 0xff;
    bytes[i + 3] = (x >>> 24) & 0xff;
  }
  return bytes;
}

const sha256 = (bytes: Uint8Array) => new Bun.CryptoHasher("sha256").update(bytes).digest("hex");

describe("a 70 MB item through a node whose frames are 8 MiB", () => {
  const big = bytesOf(70_000_000, 70);

  test("arrives whole: its length and hash come back, beside small items", async () => {
    const root = newRoot(smallFrames);
    const outputs: Array<{ length: number; sha256: string }> = [];
    await root.setup("big-hash", "1", [{ function: tasks.lengthAndHash }], {
      localPackages: [TASKS],
      outputHandler: (out) => void outputs.push(out),
    });
    const small = bytesOf(1000, 1);
    await root.run([small, big, small]);
    expect(outputs.map((out) => out.length).sort((a, b) => a - b)).toEqual([1000, 1000, 70_000_000]);
    expect(outputs.find((out) => out.length === 70_000_000)?.sha256).toBe(sha256(big));
    expect(root.progress.resent).toBe(0);
    expect((await root.status())[0]?.pipeline?.name).toBe("big-hash"); // the same node, still this root's
    await root.reset();
  }, 90_000);

  test("comes back intact as an output of 70 MB", async () => {
    const root = newRoot(smallFrames);
    const outputs: Uint8Array[] = [];
    await root.setup("big-echo", "1", [{ function: tasks.echo }], {
      localPackages: [TASKS],
      outputHandler: (out) => void outputs.push(out as Uint8Array),
    });
    await root.run([big]);
    expect(outputs.length).toBe(1);
    expect(outputs[0]!.length).toBe(big.length);
    expect(sha256(outputs[0]!)).toBe(sha256(big));
    expect(root.progress.resent).toBe(0);
    await root.reset();
  }, 90_000);
});

describe("items over the limit are refused at feed", () => {
  test("the root's limit: ItemTooLargeError names index, size and limit, and nothing of that call is queued", async () => {
    const limit = 10 * MIB;
    const root = newRoot(smallFrames, { maxItemBytes: limit });
    const outputs: number[] = [];
    await root.setup("limit", "1", [{ function: tasks.lengthAndHash }], {
      localPackages: [TASKS],
      outputHandler: (out) => void outputs.push((out as { length: number }).length),
    });
    const over = bytesOf(limit + 1, 3);
    const encoded = encodeItem(over).length; // a few bytes more than its length
    let error: unknown;
    try {
      root.feed(bytesOf(10, 1), bytesOf(20, 2), over, bytesOf(30, 4));
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(ItemTooLargeError);
    const refusal = error as ItemTooLargeError;
    expect(refusal.index).toBe(2);
    expect(refusal.size).toBe(encoded);
    expect(refusal.limit).toBe(limit);
    expect(refusal.message).toContain(`item 2 is ${encoded} bytes encoded, over the limit of ${limit} bytes`);
    expect(root.progress.fed).toBe(0);
    expect(root.progress.queued).toBe(0);
    // feedMany names the index the same way; what fits still goes.
    expect(() => root.feedMany([bytesOf(5, 5), over])).toThrow("item 1 is");
    root.feed(bytesOf(40, 6), bytesOf(limit - 100, 7));
    await root.waitEmpty();
    expect(outputs.sort((a, b) => a - b)).toEqual([40, limit - 100]);
    await root.reset();
  }, 60_000);

  test("a node's smaller --max-item is told at setup, and the root holds feeds to it", async () => {
    const root = newRoot(smallItems, { maxItemBytes: 10 * MIB });
    const outputs: number[] = [];
    await root.setup("node-limit", "1", [{ function: tasks.lengthAndHash }], {
      localPackages: [TASKS],
      outputHandler: (out) => void outputs.push((out as { length: number }).length),
    });
    const error = (() => {
      try {
        root.feed(bytesOf(7_000_000, 8));
      } catch (caught) {
        return caught;
      }
    })();
    expect(error).toBeInstanceOf(ItemTooLargeError);
    expect((error as ItemTooLargeError).limit).toBe(6_000_000);
    root.feed(bytesOf(5_000_000, 9));
    await root.waitEmpty();
    expect(outputs).toEqual([5_000_000]);
    await root.reset();
  }, 60_000);
});

test("items larger than a node's byte grant still reach every worker at once, not one item at a time", async () => {
  // Rings of 256 KiB: 2 workers grant 2 MiB in flight; each item is 3 MiB.
  const root = newRoot(smallRings);
  await root.setup("over-grant", "1", [{ function: fixtureTasks.gated }], {
    localPackages: [join(REPO, "test/fixtures/tasks")],
  });
  const gate = join(dir, "open");
  const pad = "g".repeat(3 * MIB);
  root.feed(...[1, 2, 3].map((id) => ({ gate, id, pad })));
  // Both workers hold one (they wait on the gate); before, the second waited for the first to finish.
  const [busy] = await waitFor(() => root.status(), {
    what: "both workers of the node with an item",
    until: ([status]) => status!.pipeline!.inFlight >= 2 && status!.pipeline!.idleWorkers === 0,
  });
  expect(busy!.pipeline!.inFlight).toBe(2); // no more: the third waits for a worker to be free
  writeFileSync(gate, "");
  await root.waitEmpty();
  expect(root.progress).toMatchObject({ fed: 3, done: 3, outputs: 3, errors: 0, resent: 0 });
  expect(smallRings.proc.output).not.toContain("refused a feed");
  await root.reset();
}, 60_000);

test("items of megabytes in a row, through memory the node keeps for the next: every one arrives intact", async () => {
  // 1 to 4 MiB items each go in a buffer of their own on the node, larger feeds are joined from parts;
  // both are kept once done and written again for later items while other workers still read theirs.
  const root = newRoot(twoWorkers);
  const outputs: Array<{ length: number; sha256: string }> = [];
  await root.setup("kept-buffers", "1", [{ function: tasks.lengthAndHashSlowly }], {
    localPackages: [TASKS],
    outputHandler: (out) => void outputs.push(out),
  });
  const items = Array.from({ length: 36 }, (_, i) => bytesOf((i % 3 === 0 ? 5 : 2) * MIB + i * 4099, 100 + i));
  await root.run(items);
  const expected = items.map((item) => ({ length: item.length, sha256: sha256(item) }));
  const byLength = (a: { length: number }, b: { length: number }) => a.length - b.length;
  expect(outputs.sort(byLength)).toEqual(expected.sort(byLength));
  expect(root.progress).toMatchObject({ fed: 36, done: 36, errors: 0, resent: 0 });
  await root.reset();
}, 60_000);

test("outputs of megabytes held for their item's Done, some retracted by a worker's death, arrive once and intact", async () => {
  // The root joins each (in parts) in memory it takes again once nothing reads it: an output held for its
  // Done keeps it; one handed out or dropped lets it go.
  const root = newRoot(twoWorkers);
  const outputs: Uint8Array[] = [];
  await root.setup("held-large", "1", [{ function: tasks.threeLargeOutputs, isGenerator: true }], {
    localPackages: [TASKS],
    outputHandler: (out) => void outputs.push(out as Uint8Array),
  });
  const items = Array.from({ length: 8 }, (_, id) => ({
    id,
    dieOnce: id % 4 === 1 ? join(dir, `died-${id}`) : undefined,
  }));
  await root.run(items);
  expect(root.progress).toMatchObject({ fed: 8, done: 8, outputs: 24, errors: 0 });
  const fills = outputs.map((out) => {
    expect(out.length).toBe(5_000_000);
    const fill = out[0]!;
    expect(out.every((byte) => byte === fill)).toBe(true);
    return fill;
  });
  expect(fills.sort((a, b) => a - b)).toEqual(Array.from({ length: 24 }, (_, i) => i));
  expect(items.filter((item) => item.dieOnce !== undefined).every((item) => existsSync(item.dieOnce!))).toBe(true);
  await root.reset();
}, 60_000);

test("an output over the limit is a TaskError for its item; the other items finish", async () => {
  const root = newRoot(smallFrames);
  const outputs: number[] = [];
  const errors: TaskError[] = [];
  const limit = 10 * MIB;
  await root.setup("big-output", "1", [{ function: tasks.outputOf }], {
    localPackages: [TASKS],
    maxItemBytes: limit,
    outputHandler: (out) => void outputs.push((out as Uint8Array).length),
    errorHandler: (error) => void errors.push(error),
  });
  await root.run([
    { size: 100, fill: 1 },
    { size: 12 * MIB, fill: 2 },
    { size: 200, fill: 3 },
    { size: 9 * MIB, fill: 4 },
  ]);
  expect(outputs.sort((a, b) => a - b)).toEqual([100, 200, 9 * MIB]);
  expect(errors.length).toBe(1);
  expect(errors[0]).toBeInstanceOf(TaskError);
  expect(errors[0]!.task).toBe("outputOf");
  expect(errors[0]!.message).toContain(`over the limit of ${limit} bytes`);
  expect(root.progress.resent).toBe(0);
  await root.reset();
}, 60_000);

test("--max-item takes a whole number of bytes from 1 to 3 GiB, or the node says why", async () => {
  const { code, stderr } = await runCli(["node", "--host", "127.0.0.1", "--port", "0", "--max-item", "0"]);
  expect(code).not.toBe(0);
  expect(stderr).toContain("--max-item must be a whole number of bytes from 1 to 3221225472");
}, 30_000);
