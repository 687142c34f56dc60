import { afterAll, describe, expect, test } from "bun:test";
import { RecordBatchBuilder, encode } from "../../src/protocol/codec.ts";
import { RecordKind } from "../../src/protocol/record.ts";
import { EngineHarness, removeDir, writeTaskPackage } from "../support/engine.ts";

/**
 * Items too large for a worker's ring go in shared memory the engine keeps for the next such items
 * (src/protocol/kept-buffers.ts): never written again while an item still reads it.
 */
describe("an engine writing items of megabytes into kept memory", () => {
  // Each item's hash, 30 ms later: the items after it wait in the worker's queue, their bytes not read yet.
  const dir = writeTaskPackage({
    "index.ts": `export function slowHash(bytes) {
  Bun.sleepSync(30);
  return { length: bytes.length, sha256: new Bun.CryptoHasher("sha256").update(bytes).digest("hex") };
}`,
  });
  afterAll(() => removeDir(dir));
  const hash = (bytes: Uint8Array) => ({
    length: bytes.length,
    sha256: new Bun.CryptoHasher("sha256").update(bytes).digest("hex"),
  });
  /** Items of 3 MiB down to 2 MiB, each of its own bytes: any one of them fits where another was. */
  const items = (seed: number) =>
    Array.from({ length: 6 }, (_, i) => new Uint8Array(3 * MIB - i * 150_000).fill(seed + i));
  const MIB = 1024 * 1024;

  test("no item's memory is written again before the item is done, whether copied out or read in place", async () => {
    const harness = await EngineHarness.start(dir, [{ export: "slowHash" }], { workers: 1 });
    try {
      const fed: Uint8Array[] = [];
      const recordsOf = (seed: number) => {
        const batch = new RecordBatchBuilder();
        for (const item of items(seed)) {
          fed.push(item);
          batch.append(RecordKind.Input, 0, 0, fed.length, encode(item));
        }
        return batch.takeRecords();
      };
      const joinedFeed = (seed: number) => {
        const records = recordsOf(seed);
        const joined = harness.engine.oversizeBuffers.take(records.length);
        joined.set(records);
        return joined;
      };
      // A feed joined from parts: its items are read in place, later, one by one (30 ms each).
      const first = joinedFeed(0);
      harness.engine.dispatch(first);
      // Another of the same size meanwhile does not get the same memory: items of the first still read it.
      const second = joinedFeed(10);
      expect(second.buffer === first.buffer).toBe(false);
      harness.engine.dispatch(second);
      // Feeds whose items are copied out of their frames, each into memory of its own, kept afterwards.
      harness.engine.dispatch(recordsOf(20));
      harness.engine.dispatch(recordsOf(30));
      await harness.waitEmpty();
      expect(harness.errors).toEqual([]);
      expect(harness.values()).toEqual(fed.map(hash));
      // Once they are done, the memory is kept: the next feed of that size is joined where the first was.
      const kept = harness.engine.oversizeBuffers.spareBytes;
      expect(kept).toBeGreaterThanOrEqual(first.buffer.byteLength);
      const third = joinedFeed(40);
      expect(third.buffer === first.buffer || third.buffer === second.buffer).toBe(true);
      harness.engine.dispatch(third);
      await harness.waitEmpty();
      expect(harness.values()).toEqual(fed.map(hash));
    } finally {
      await harness.engine.reset();
    }
  }, 60_000);
});
