import { describe, expect, test } from "bun:test";
import { KeptBuffers, sharedMemory } from "../../src/protocol/kept-buffers.ts";

/** Memory kept for the next messages and items of megabytes (src/protocol/kept-buffers.ts). */
describe("KeptBuffers", () => {
  test("a buffer is kept once its last holder lets go, and taken again for an item it holds, under twice its size", () => {
    const buffers = new KeptBuffers(sharedMemory);
    const first = buffers.take(3_000_000);
    expect(first.buffer).toBeInstanceOf(SharedArrayBuffer); // as allocated
    expect(first.length).toBe(3_000_000);
    buffers.hold(first); // two holders now
    buffers.release(first);
    expect(buffers.spareBytes).toBe(0); // one holder left: not free
    expect(buffers.take(3_000_000).buffer === first.buffer).toBe(false);
    buffers.release(first);
    expect(buffers.spareBytes).toBe(3_000_000);
    // Too small for it, and an item under half its size: fresh buffers. One that fits: the kept one.
    expect(buffers.take(3_000_001).buffer === first.buffer).toBe(false);
    expect(buffers.take(1_400_000).buffer === first.buffer).toBe(false);
    const again = buffers.take(2_000_000);
    expect(again.buffer === first.buffer).toBe(true);
    expect(again.length).toBe(2_000_000);
    expect(buffers.spareBytes).toBe(0);
  });

  test("a joined feed holds its buffer until dispatched, and each item read in place until it is done", () => {
    const buffers = new KeptBuffers(sharedMemory);
    const feed = buffers.take(10_000_000);
    const items = [feed.subarray(100, 5_000_100), feed.subarray(5_000_200, 9_000_000)];
    for (const item of items) buffers.hold(item);
    buffers.release(feed); // all of it dispatched
    buffers.release(items[0]!);
    expect(buffers.spareBytes).toBe(0);
    buffers.release(items[1]!); // the last item done
    expect(buffers.spareBytes).toBe(10_000_000);
    expect(buffers.take(9_000_000).buffer === feed.buffer).toBe(true);
  });

  test("memory not handed out here is never kept; what is kept is bounded", () => {
    const buffers = new KeptBuffers((size) => new ArrayBuffer(size), 5_000_000);
    const foreign = new Uint8Array(new SharedArrayBuffer(1_000_000));
    buffers.hold(foreign);
    buffers.release(foreign);
    buffers.release(new Uint8Array(1000));
    expect(buffers.spareBytes).toBe(0);
    const [a, b] = [buffers.take(3_000_000), buffers.take(3_000_000)];
    buffers.release(a);
    buffers.release(b); // past the bound: the latest is kept, the one kept before goes
    expect(buffers.spareBytes).toBe(3_000_000);
    expect(buffers.take(3_000_000).buffer === b.buffer).toBe(true);
    expect(buffers.spareBytes).toBe(0);
  });

  test("one very large buffer kept once does not keep the place of the smaller ones that come after", () => {
    const buffers = new KeptBuffers((size) => new ArrayBuffer(size), 64 * 1024 * 1024);
    buffers.release(buffers.take(60_000_000)); // one item of 60 MB, once
    const item = buffers.take(20_000_000);
    buffers.release(item); // then items of 20 MB: the 60 MB buffer goes, theirs is kept
    expect(buffers.spareBytes).toBe(20_000_000);
    expect(buffers.take(20_000_000).buffer === item.buffer).toBe(true);
    buffers.release(buffers.take(70_000_000)); // larger than the bound: never kept
    expect(buffers.spareBytes).toBe(0);
  });

  test("buffers of a few megabytes are kept apart from larger ones: they never push out the buffer a large message is joined in", () => {
    const MIB = 1024 * 1024;
    const buffers = new KeptBuffers((size) => new ArrayBuffer(size), 64 * MIB);
    const joined = buffers.take(60_000_000); // a results message of 60 MB joined from its parts
    buffers.release(joined);
    // Then the frames of the next one's parts (4 MiB each), one after the other: kept beside it.
    for (let part = 0; part < 20; part++) buffers.release(buffers.take(4 * MIB + 100));
    expect(buffers.spareBytes).toBe(60_000_000 + 4 * MIB + 100);
    expect(buffers.take(60_000_000).buffer === joined.buffer).toBe(true);
    // Of the smaller ones, at most 16 MiB are kept: the latest, over larger ones kept before.
    const small = Array.from({ length: 5 }, (_, k) => buffers.take(5 * MIB + k));
    for (const bytes of small) buffers.release(bytes);
    expect(buffers.spareBytes).toBeGreaterThan(10 * MIB);
    expect(buffers.spareBytes).toBeLessThanOrEqual(16 * MIB);
    expect(buffers.take(5 * MIB + 4).buffer === small[4]!.buffer).toBe(true);
  });
});
