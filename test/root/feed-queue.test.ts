import { describe, expect, test } from "bun:test";
import { ItemEncodeError } from "../../src/errors.ts";
import { RecordBatchBuilder, decode, encode } from "../../src/protocol/codec.ts";
import { RecordKind, RecordReader } from "../../src/protocol/record.ts";
import { FeedQueue } from "../../src/root/feed-queue.ts";
import { Scheduler } from "../../src/root/scheduler.ts";
import { blobOf } from "../support/feed-target.ts";

/** Every record of `blob` as [kind, id, decoded item]. */
function readAll(blob: Uint8Array): Array<[number, number, unknown]> {
  const records: Array<[number, number, unknown]> = [];
  const reader = new RecordReader(blob);
  while (reader.next()) records.push([reader.kind, reader.id, decode(blob, reader.payloadStart, reader.payloadEnd)]);
  return records;
}

/** Sends up to `count` records from `queue` into one batch, numbering them from `firstId`; returns records and refs by id. */
function sendSome(queue: FeedQueue, count: number, firstId: number, maxBytes = 1 << 30) {
  const batch = new RecordBatchBuilder();
  const refs = new Map<number, number>();
  let id = firstId;
  const bytes = queue.send(batch, count, maxBytes, (ref) => {
    refs.set(id, ref);
    return id++;
  });
  return { records: readAll(batch.takeRecords()), refs, bytes };
}

describe("FeedQueue", () => {
  test("items come out in order, as records with the ids given, across many chunks", () => {
    const queue = new FeedQueue();
    const items = Array.from({ length: 20_000 }, (_, i) => ({
      i,
      text: "t".repeat(i % 300),
      note: i % 7 === 0 ? "日本" : "x",
    }));
    queue.appendValues(items.slice(0, 12_000));
    queue.appendBytes(items.slice(12_000).map((item) => encode(item)));
    expect(queue.length).toBe(20_000);
    const out: unknown[] = [];
    let nextId = 1;
    while (queue.length > 0) {
      const { records } = sendSome(queue, 777, nextId);
      for (const [kind, id, value] of records) {
        expect(kind).toBe(RecordKind.Input);
        expect(id).toBe(nextId++);
        out.push(value);
      }
    }
    expect(out).toEqual(items);
    expect(queue.bytes).toBe(0);
  });

  test("a batch stops at the byte budget, but always takes one item", () => {
    const queue = new FeedQueue();
    queue.appendValues(Array.from({ length: 10 }, () => "b".repeat(1000)));
    const first = sendSome(queue, 10, 1, 2500);
    expect(first.records.length).toBe(3); // 3 × ~1003 bytes reaches 2500
    const second = sendSome(queue, 10, 4, 10);
    expect(second.records.length).toBe(1);
    expect(queue.length).toBe(6);
  });

  test("a value that cannot be carried is refused by index and path, and none of its call is queued", () => {
    const queue = new FeedQueue();
    queue.appendValues(["before"]);
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    const many = Array.from({ length: 5000 }, (_, i) => ({ i, pad: "p".repeat(100) })); // spans new chunks
    expect(() => queue.appendValues([...many, cycle, "after"])).toThrow(
      "items[5000].self: a circular reference (back to items[5000]) cannot be sent",
    );
    expect(queue.length).toBe(1);
    queue.appendValues(["next"]);
    expect(() => queue.appendValues([{ a: 1 }, { b: 2 }, { m: new Map() }])).toThrow(
      /^items\[2\]\.m: a Map cannot be sent/,
    ); // within one chunk
    expect(() => queue.appendValues([1, { pad: "p".repeat(9000), f: () => 1 }], 40)).toThrow(ItemEncodeError); // the large path
    expect(() => queue.appendValues([1, { pad: "p".repeat(9000), f: () => 1 }], 40)).toThrow(
      "items[41].f: a function cannot be sent",
    );
    queue.appendValues(["last"]);
    const { records } = sendSome(queue, 10, 1);
    expect(records.map(([, , value]) => value)).toEqual(["before", "next", "last"]);
  });

  test("a sent item's bytes can be taken back for a re-send; an item larger than a chunk has one of its own", () => {
    const queue = new FeedQueue();
    const big = "B".repeat(600_000);
    queue.appendValues([{ n: 1 }, big, { n: 3 }]);
    const { refs } = sendSome(queue, 3, 10);
    expect(queue.lengthOf(refs.get(11)!)).toBe(encode(big).length);
    expect(decode(queue.takeBack(refs.get(11)!))).toBe(big);
    expect(decode(queue.takeBack(refs.get(10)!))).toEqual({ n: 1 });
    queue.release(refs.get(12)!);
  });

  test("a chunk whose items are all done is written again, not allocated afresh; one that lent a payload never is", () => {
    const queue = new FeedQueue();
    const items = (round: number) => Array.from({ length: 400 }, (_, i) => ({ round, i, pad: "r".repeat(300) }));
    /** The buffers the records of one send lie in. */
    const buffersOf = (refs: Map<number, number>) =>
      new Set([...refs.values()].map((ref) => queue.payloadOf(ref).buffer));

    queue.appendValues(items(0));
    const first = sendSome(queue, 400, 1);
    const firstBuffers = buffersOf(first.refs);
    expect(firstBuffers.size).toBeGreaterThan(1); // ~130 KB: several chunks
    for (const ref of first.refs.values()) queue.release(ref);
    queue.appendValues(items(1));
    const second = sendSome(queue, 400, 1000);
    const reused = [...buffersOf(second.refs)].filter((buffer) => firstBuffers.has(buffer));
    expect(reused.length).toBeGreaterThan(0);
    expect(second.records.map(([, , value]) => value)).toEqual(items(1));

    // Taken back (a lost node's items, to be sent again): the payload is a view of its chunk, which must
    // keep its bytes however many items come after.
    const taken = [...second.refs.values()].map((ref) => queue.takeBack(ref));
    for (let round = 2; round < 6; round++) {
      queue.appendValues(items(round));
      const { refs } = sendSome(queue, 400, round * 1000);
      for (const ref of refs.values()) queue.release(ref);
    }
    expect(taken.map((bytes) => decode(bytes))).toEqual(items(1));
  });

  test("a call that fails after the done tail filled up leaves nothing of it, whatever chunks it took", () => {
    const queue = new FeedQueue();
    queue.appendValues(["t".repeat(45_000)]);
    const first = sendSome(queue, 1, 1);
    queue.release(first.refs.get(1)!); // the tail's items are all done; ~20 KB of it is free
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    // Its first item does not fit the tail's rest: it takes a chunk of its own. Then the call fails.
    expect(() => queue.appendValues(["v".repeat(30_000), { i: 1 }, cycle])).toThrow(/circular reference/);
    expect(queue.length).toBe(0);
    queue.appendValues(["after"]); // fits the tail's rest
    const { records } = sendSome(queue, 10, 1000);
    expect(records.map(([, , value]) => value)).toEqual(["after"]);
  });

  test("long strings are written straight into their chunk and read back as the codec's own encoding does", () => {
    const queue = new FeedQueue();
    const strings = [
      "a".repeat(2729), // the small writer's last length, and past it
      "b".repeat(2730),
      "c".repeat(65_535), // the last str16, and the first str32
      "d".repeat(65_536),
      "é".repeat(40_000), // 2 bytes a character
      `${"🙂".repeat(3000)} end`, // 4 bytes a pair of UTF-16 units
      `lone ${"\ud800".repeat(1000)} ${"x".repeat(3000)} \udfff`, // lone surrogates become U+FFFD
      "L".repeat(3_000_000), // a chunk of its own, of a size kept for reuse
      "X".repeat(5_000_000), // past the sizes kept: of its exact size
      "small after",
    ];
    queue.appendValues(strings);
    const { records, refs } = sendSome(queue, strings.length, 1);
    expect(records.map(([, , value]) => value)).toEqual(strings.map((value) => decode(encode(value))));
    for (const [id, ref] of refs) expect(queue.lengthOf(ref)).toBe(encode(strings[id - 1]).length);
  });

  test("a chunk of a large item is written again for a large item of its size once the first is done", () => {
    const queue = new FeedQueue();
    queue.appendValues(["y".repeat(200_000)]);
    const first = sendSome(queue, 1, 1);
    const firstBuffer = queue.payloadOf(first.refs.get(1)!).buffer;
    queue.appendValues(["n".repeat(70_000)]); // too large for its rest: the large chunk is no longer filled
    queue.release(first.refs.get(1)!);
    queue.appendValues(["z".repeat(150_000)]); // the same power of two: 256 KiB
    const second = sendSome(queue, 2, 2);
    expect(queue.payloadOf(second.refs.get(3)!).buffer === firstBuffer).toBe(true);
    expect(second.records.map(([, , value]) => value)).toEqual(["n".repeat(70_000), "z".repeat(150_000)]);
  });

  test("a chunk of an item past 4 MiB is kept too: written again for an item it holds and not twice smaller, alone", () => {
    const queue = new FeedQueue();
    const bytes = (size: number, fill: number) => new Uint8Array(size).fill(fill);
    const bufferOf = (sent: ReturnType<typeof sendSome>, id: number) => queue.payloadOf(sent.refs.get(id)!).buffer;
    // As items stream: the first is done once the next is queued (a chunk still being filled is not kept).
    queue.appendValues([bytes(6_000_000, 1)]);
    const first = sendSome(queue, 1, 1);
    const kept = bufferOf(first, 1);
    queue.appendValues(["small"]);
    queue.release(first.refs.get(1)!);
    // Smaller, but more than half its size: the kept 6 MB chunk takes it, and nothing after it.
    queue.appendValues([bytes(5_000_000, 2), "small after"]);
    const second = sendSome(queue, 3, 2);
    expect([2, 3, 4].map((id) => bufferOf(second, id) === kept)).toEqual([false, true, false]);
    const values = second.records.map(([, , value]) => value);
    expect(values[0]).toBe("small");
    expect((values[1] as Uint8Array).length).toBe(5_000_000);
    expect((values[1] as Uint8Array).every((byte) => byte === 2)).toBe(true);
    expect(values[2]).toBe("small after");
    queue.release(second.refs.get(3)!); // kept again
    // Larger than it, or under half of a larger one: a chunk of its own size.
    queue.appendValues([bytes(7_000_000, 3)]);
    const third = sendSome(queue, 1, 5);
    expect(bufferOf(third, 5) === kept).toBe(false);
    const bigger = bufferOf(third, 5);
    queue.appendValues(["small"]);
    queue.release(third.refs.get(5)!); // kept: 6 MB and 7 MB chunks
    queue.appendValues([bytes(4_300_000, 4)]); // 6 MB holds it, and is not twice its size
    queue.appendValues([bytes(6_500_000, 5)]); // only the 7 MB one holds it
    const fourth = sendSome(queue, 3, 6);
    expect(bufferOf(fourth, 7) === kept).toBe(true);
    expect(bufferOf(fourth, 8) === bigger).toBe(true);
    queue.appendValues([bytes(20_000_000, 6)]);
    const fifth = sendSome(queue, 1, 9);
    const huge = bufferOf(fifth, 9);
    queue.appendValues(["small"]);
    queue.release(fifth.refs.get(9)!); // kept
    queue.appendValues([bytes(9_000_000, 7)]); // the 20 MB chunk holds it, but is over twice its size
    const sixth = sendSome(queue, 2, 10);
    expect(bufferOf(sixth, 11) === huge).toBe(false);
    // One item of 60 MB once, then items of 9 MB: the 60 MB chunk kept does not keep their place.
    queue.appendValues([bytes(60_000_000, 8)]);
    const seventh = sendSome(queue, 2, 12);
    queue.appendValues([bytes(9_000_000, 9)]); // a chunk of its own: the 60 MB one is over twice its size
    for (const ref of [...sixth.refs.values(), ...seventh.refs.values()]) queue.release(ref);
    const eighth = sendSome(queue, 1, 14);
    const nine = bufferOf(eighth, 14);
    queue.appendValues(["small"]);
    queue.release(eighth.refs.get(14)!); // kept, in place of the 60 MB one
    queue.appendValues([bytes(9_000_000, 10)]);
    expect(bufferOf(sendSome(queue, 2, 15), 16) === nine).toBe(true);
  });

  test("large items fed each once the one before is done (run after run) take the memory of those before", () => {
    const queue = new FeedQueue();
    const bytes = (fill: number) => new Uint8Array(6_000_000).fill(fill);
    const buffers: ArrayBufferLike[] = [];
    for (let round = 0; round < 6; round++) {
      // The tail is the last item's chunk, all of it done. It is kept once the call that replaced it went
      // through (a call that fails goes back to it): the items take turns in two chunks, never a new one.
      queue.appendValues([bytes(round)]);
      const sent = sendSome(queue, 1, round + 1);
      const value = sent.records[0]![2] as Uint8Array;
      expect(value.length).toBe(6_000_000);
      expect(value[0] === round && value[5_999_999] === round).toBe(true);
      buffers.push(queue.payloadOf(sent.refs.get(round + 1)!).buffer);
      queue.release(sent.refs.get(round + 1)!);
    }
    expect(new Set(buffers).size).toBe(2);
    // A call that fails after replacing the done tail rolls back to it, its memory not written over.
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    expect(() => queue.appendValues([bytes(9), cycle])).toThrow(/circular reference/);
    queue.appendValues(["after"]);
    const after = sendSome(queue, 10, 100);
    expect(after.records.map(([, , value]) => value)).toEqual(["after"]);
  });

  test("chunks whose items are all sent and done are let go", () => {
    const queue = new FeedQueue();
    for (let round = 0; round < 50; round++) {
      queue.appendValues(Array.from({ length: 1000 }, (_, i) => ({ round, i, pad: "q".repeat(200) })));
      const { refs } = sendSome(queue, 1000, 1);
      for (const ref of refs.values()) queue.release(ref);
    }
    // ~11 MB went through; only the chunk still being filled is kept.
    expect(queue.liveChunks).toBeLessThanOrEqual(1);
  });
});

describe("Scheduler with the feed queue", () => {
  test("a few items in flight for long get bytes of their own, and their chunks go; a lost node's items come back intact", async () => {
    let now = 1000;
    const scheduler = new Scheduler({ staleChunkMs: 50, fixedWindow: 100_000, clock: () => now });
    const sentIds: number[] = [];
    const target = {
      address: "fake",
      sendFeed(frame: readonly Uint8Array[]) {
        const reader = new RecordReader(blobOf(frame));
        while (reader.next()) sentIds.push(reader.id);
      },
    };
    const lane = scheduler.addLane(target, 2, { items: 100_000, bytes: 1 << 30 });
    const items = Array.from({ length: 20_000 }, (_, i) => ({ i, pad: "z".repeat(150) }));
    scheduler.enqueueValues(items);
    scheduler.pump();
    expect(sentIds.length).toBe(20_000);
    // All done but one item in 1000, which stays in flight for long.
    const lingering = sentIds.filter((_, k) => k % 1000 === 500);
    for (const id of sentIds) if (!lingering.includes(id)) expect(scheduler.complete(lane, id)).toBe(true);
    expect(scheduler.feedChunks).toBeGreaterThan(5); // ~3.5 MB of items in ~55 chunks, 20 of them held
    now += 80; // the chunks' lingering items have been in flight for longer than staleChunkMs
    scheduler.enqueueValues([{ late: true }]);
    scheduler.pump(); // the check runs with a pump
    expect(scheduler.feedChunks).toBeLessThanOrEqual(2);
    for (const id of lingering) {
      const bytes = lane.ledger.get(id) as Uint8Array;
      expect(bytes).toBeInstanceOf(Uint8Array);
      expect(bytes.buffer.byteLength).toBe(bytes.length); // its own bytes, not a view that keeps the chunk
    }
    // The node is lost: the lingering items are queued again, as they were fed.
    const { requeued } = scheduler.removeLane(lane);
    expect(requeued).toBe(lingering.length + 1);
    const again: unknown[] = [];
    const second = scheduler.addLane(
      {
        address: "fake 2",
        sendFeed(frame: readonly Uint8Array[]) {
          const blob = blobOf(frame);
          const reader = new RecordReader(blob);
          while (reader.next()) again.push(decode(blob, reader.payloadStart, reader.payloadEnd));
        },
      },
      2,
      { items: 100_000, bytes: 1 << 30 },
    );
    scheduler.pump();
    expect(second.inFlight).toBe(lingering.length + 1);
    const expected = [
      ...sentIds
        .map((_, k) => k)
        .filter((k) => k % 1000 === 500)
        .map((k) => items[k]),
      { late: true },
    ];
    expect(sortByJson(again)).toEqual(sortByJson(expected));
  });
});

function sortByJson(values: unknown[]): unknown[] {
  return [...values].sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1));
}
