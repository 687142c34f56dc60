import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { ItemEncodeError, Root, TaskError } from "../../src/index.ts";
import * as tasks from "../fixtures/tasks/index.ts";
import { arrival, difference } from "../support/faithful.ts";
import { type RunningNode, startNode, tearDown } from "../support/nodes.ts";
import { REPO } from "../support/processes.ts";

/**
 * What an item may be, through a real node: the root refuses at feed what it cannot carry (naming the
 * index and the path, queueing nothing of that call); a task's output that cannot be carried is that
 * item's TaskError while everything else goes on; what can be carried arrives as itself both ways.
 */
const TASKS = join(REPO, "test/fixtures/tasks");
let node: RunningNode;
let cluster: Root;

beforeAll(async () => {
  node = await startNode({ workers: 1 });
  cluster = new Root([node.addr]);
}, 30_000);
afterAll(async () => {
  await cluster?.close();
  await tearDown([], [node?.workdir]);
});

/** The ItemEncodeError `call` throws (anything else is rethrown; no throw fails the test). */
function refusalOf(call: () => unknown): ItemEncodeError {
  try {
    call();
  } catch (error) {
    if (error instanceof ItemEncodeError) return error;
    throw error;
  }
  throw new Error("was not refused");
}

/** `values` fed as items through the identity task; its outputs in the order they came (one per item). */
async function throughIdentity(name: string, values: readonly unknown[]): Promise<unknown[]> {
  const outputs: unknown[] = [];
  await cluster.setup(name, "1", [{ function: tasks.identity }], {
    localPackages: [TASKS],
    outputHandler: (output) => void outputs.push(output),
  });
  cluster.feedMany(values);
  await cluster.waitEmpty();
  expect(outputs.length).toBe(values.length);
  return outputs;
}

class Point {
  x = 1;
}

describe("at feed", () => {
  test("feed, feedMany, run and process refuse an item by index and path, and queue nothing of the call", async () => {
    const outputs: unknown[] = [];
    await cluster.setup("item-values", "1", [{ function: tasks.identity }], {
      localPackages: [TASKS],
      outputHandler: (output) => void outputs.push(output),
    });

    // What the types refuse is refused at run time too (for callers the types cannot see).
    // @ts-expect-error a function cannot travel
    const fed = refusalOf(() => cluster.feed({ id: 0 }, { id: 1 }, { id: 2 }, { id: 3, meta: { cb: () => 3 } }));
    expect(fed.message).toBe("items[3].meta.cb: a function cannot be sent");
    expect([fed.index, fed.path, fed.reason]).toEqual([3, "items[3].meta.cb", "a function cannot be sent"]);
    expect(fed.code).toBe("item-encode");

    // @ts-expect-error a Map cannot travel
    const many = refusalOf(() => cluster.feedMany([{ id: 4 }, { tags: new Map([["a", 1]]) }]));
    expect(many.message).toStartWith("items[1].tags: a Map cannot be sent");
    // An item too large for the small-item writer is checked on msgpackr's path, alike.
    // @ts-expect-error a symbol cannot travel
    const large = refusalOf(() => cluster.feed({ id: 5 }, { id: 6, pad: "p".repeat(20_000), list: [1, Symbol("s")] }));
    expect(large.message).toBe("items[1].list[1]: a symbol cannot be sent");
    expect(cluster.progress.fed).toBe(0);

    await expect(cluster.run([{ id: 7 }, { id: 8 }, [new Point()]])).rejects.toThrow(
      "items[2][0]: a Point (an instance of a class) cannot be sent: " +
        "it would arrive as a plain object, without its class; send a plain object",
    );
    const cycle: Record<string, unknown> = { id: 9 };
    cycle.self = cycle;
    const seen: unknown[] = [];
    let processError: unknown;
    try {
      for await (const output of cluster.process([{ id: 10 }, cycle])) seen.push(output);
    } catch (error) {
      processError = error;
    }
    expect(processError).toBeInstanceOf(ItemEncodeError);
    const circular = "items[1].self: a circular reference (back to items[1]) cannot be sent";
    expect((processError as Error).message).toBe(circular);
    expect(seen).toEqual([]);

    // Nothing of the refused calls went anywhere: only what is fed now comes out.
    cluster.feed({ id: 11 });
    await cluster.waitEmpty();
    expect(outputs).toEqual([{ id: 11 }]);
    expect(cluster.progress.fed).toBe(1);
  }, 60_000);

  test("what can be carried goes to the node and comes back as itself", async () => {
    const values: unknown[] = [
      undefined,
      [1, undefined, 3],
      { u: undefined, n: null },
      10n,
      -(2n ** 63n),
      2n ** 64n - 1n,
      2n ** 70n,
      { n: 2 ** 40, b: 2n ** 40n },
      new Date(1_700_000_000_123),
      new Set(["a", 1, { b: 2 }]),
      Uint8Array.of(1, 2, 3),
      Buffer.from("buffer"),
      Float64Array.of(1.5, -2),
      BigInt64Array.of(-7n),
      Uint8Array.of(5, 6).buffer,
      /a+b/gi,
      Object.assign(Object.create(null), { bare: true }),
      { text: "t".repeat(20_000), inner: [new Set([new Date(5)]), 3n] }, // msgpackr's path
    ];
    const outputs = (await throughIdentity(
      "item-values",
      values.map((v, i) => ({ i, v })),
    )) as Array<{ i: number }>;
    outputs.sort((a, b) => a.i - b.i);
    for (const [i, v] of values.entries()) expect(difference(outputs[i], arrival({ i, v }))).toBeUndefined();
  }, 60_000);
});

describe("bytes as items themselves", () => {
  test("a Buffer or a Uint8Array of any size comes back as its class, byte for byte (large ones copied once)", async () => {
    /** Bytes that tell their own position, and `seed` in the first, so a shifted or foreign byte shows. */
    const bytesOf = (size: number, seed: number) => Uint8Array.from({ length: size }, (_, i) => (i * 7 + seed) & 0xff);
    // Sizes around the heads' widths (8 / 16 / 32-bit lengths), past the small writer, the ring and a part.
    const sizes = [10, 254, 255, 256, 300, 8200, 65_534, 65_535, 65_536, 70_000, 300_000, 6_000_000];
    const values: Uint8Array[] = [];
    for (const [i, size] of sizes.entries()) values.push(bytesOf(size, 2 * i), Buffer.from(bytesOf(size, 2 * i + 1)));
    const outputs = await throughIdentity("item-bytes", values);
    const key = (bytes: Uint8Array) => `${bytes.length}:${bytes[0]}`;
    const byKey = new Map(outputs.map((output) => [key(output as Uint8Array), output]));
    const wrong = values.map((value) => difference(byKey.get(key(value)), arrival(value), key(value)));
    expect(wrong.filter((found) => found !== undefined)).toEqual([]);
  }, 60_000);
});

describe("text as items themselves", () => {
  test("a string of any size, non-ASCII and lone surrogates too, comes back as itself", async () => {
    const line = "Grüße, 世界! 🎉 \ud800 ";
    const values = [300, 70_000, 1_500_000, 6_000_000].map(
      (size, i) => `${i}:${line.repeat(Math.ceil(size / line.length))}`,
    );
    const outputs = (await throughIdentity("item-text", values)) as string[];
    const byStart = new Map(outputs.map((output) => [output.slice(0, 2), output]));
    for (const value of values) expect(byStart.get(value.slice(0, 2)) === arrival(value)).toBe(true);
  }, 60_000);
});

describe("at a task's output", () => {
  test("an output that cannot be carried is its item's TaskError naming the path; the rest goes on", async () => {
    const outputs: Array<{ id: number; n?: number }> = [];
    const errors: TaskError[] = [];
    const setup = async (chain: Parameters<Root["setup"]>[2]) => {
      outputs.length = 0;
      errors.length = 0;
      await cluster.setup("item-values", "1", chain, {
        localPackages: [TASKS],
        outputHandler: (output) => void outputs.push(output as { id: number; n?: number }),
        errorHandler: (error) => void errors.push(error as TaskError),
      });
    };
    const items = Array.from({ length: 30 }, (_, id) => ({ id, bad: id % 10 === 3 }));

    await setup([{ function: tasks.callbackWhenBad }]);
    cluster.feedMany(items);
    await cluster.waitEmpty();
    const good = items.filter((item) => !item.bad).map((item) => item.id);
    expect(outputs.map((output) => output.id).sort((a, b) => a - b)).toEqual(good);
    expect(errors.length).toBe(3);
    for (const error of errors) {
      expect(error).toBeInstanceOf(TaskError);
      expect(error.task).toBe("callbackWhenBad");
      expect(error.failed).toBe(false);
      expect(error.message).toEndWith(": an output could not be sent: outputs[0].meta.cb: a function cannot be sent");
    }

    // A generator: the second of three outputs cannot be sent; the first and third still arrive.
    await setup([{ function: tasks.threeWithCallbackWhenBad, isGenerator: true }]);
    cluster.feedMany(items);
    await cluster.waitEmpty();
    expect(outputs.length).toBe(3 * items.length - 3);
    for (const bad of items.filter((item) => item.bad)) {
      expect(
        outputs
          .filter((output) => output.id === bad.id)
          .map((output) => output.n)
          .sort(),
      ).toEqual([0, 2]);
    }
    expect(errors.map((error) => error.message.split(": an output could not be sent: ")[1])).toEqual([
      "outputs[1].meta.cb: a function cannot be sent",
      "outputs[1].meta.cb: a function cannot be sent",
      "outputs[1].meta.cb: a function cannot be sent",
    ]);
    expect(cluster.progress.done).toBe(items.length);
  }, 60_000);
});
