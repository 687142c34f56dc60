import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { ByteRing } from "../../src/node/ring.ts";
import { RECORD_HEADER_BYTES } from "../../src/protocol/record.ts";
import type { EchoReport } from "../support/ring-echo-worker.ts";
import { seededRandom } from "../support/random.ts";
import { within } from "../support/wait.ts";

// ByteRing on its own (src/node/ring.ts): records in and out, full and empty, the wrap at the end of
// the buffer, records too large for it, and wake-ups across a real Worker thread.

const KIND = 1;
/** The kind of a pad record (filling the end of the buffer before a wrap). */
const PAD = 0;

/** A payload of `length` bytes that says which record it is. */
function payloadOf(id: number, length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (id * 31 + i) & 0xff;
  return bytes;
}

/** The record at consumer position `at`: its id and payload (a copy). */
function recordAt(ring: ByteRing, at: number): { kind: number; id: number; payload: Uint8Array; size: number } {
  const offset = ring.offsetOf(at);
  const size = ring.recordSize(offset);
  return {
    kind: ring.view.getUint8(offset),
    id: ring.view.getUint32(offset + 4, true),
    payload: ring.data.slice(offset + RECORD_HEADER_BYTES, offset + size),
    size,
  };
}

/** Reads every committed record from `position`, releasing them; returns them and the new position. */
function drain(ring: ByteRing, position: number) {
  const records: Array<ReturnType<typeof recordAt>> = [];
  for (let at = ring.peek(position); at >= 0; at = ring.peek(position)) {
    const record = recordAt(ring, at);
    records.push(record);
    position = (at + record.size) >>> 0;
  }
  ring.release(position);
  return { records, position };
}

describe("ByteRing: records in and out", () => {
  test("its size is a power of two of at least 4 KiB; any other buffer is refused", () => {
    expect(new ByteRing(ByteRing.allocate(100)).capacity).toBe(4096);
    expect(new ByteRing(ByteRing.allocate(5000)).capacity).toBe(8192);
    expect(new ByteRing(ByteRing.allocate(1 << 16)).capacity).toBe(1 << 16);
    const odd = new SharedArrayBuffer(ByteRing.allocate(4096).byteLength + 1);
    expect(() => new ByteRing(odd)).toThrow(/power of two/);
  });

  test("empty: nothing to peek; written records are invisible until committed, then come out in order", () => {
    const ring = new ByteRing(ByteRing.allocate(4096));
    expect(ring.peek(0)).toBe(-1);
    let position = ring.tryWrite(ring.writePosition, KIND, 0, 0, 1, payloadOf(1, 10));
    position = ring.tryWrite(position, KIND, 0, 0, 2, payloadOf(2, 0));
    expect(ring.peek(0)).toBe(-1);
    ring.commit(position);
    expect(ring.used).toBe(2 * RECORD_HEADER_BYTES + 10);
    const { records } = drain(ring, 0);
    expect(records.map((r) => [r.kind, r.id, r.payload.length])).toEqual([
      [KIND, 1, 10],
      [KIND, 2, 0],
    ]);
    expect(records[0]!.payload).toEqual(payloadOf(1, 10));
    expect(ring.used).toBe(0);
  });

  test("full: a record that does not fit is refused whole until the consumer releases room", () => {
    const ring = new ByteRing(ByteRing.allocate(4096));
    const size = 1024;
    let position = 0;
    for (let id = 1; id <= 4; id++)
      position = ring.tryWrite(position, KIND, 0, 0, id, payloadOf(id, size - RECORD_HEADER_BYTES));
    ring.commit(position);
    expect(ring.used).toBe(4096);
    expect(ring.roomAt(position)).toBe(0);
    expect(ring.tryWrite(position, KIND, 0, 0, 5, new Uint8Array(0))).toBe(-1);
    // The consumer takes one record: exactly its room comes back.
    const first = ring.peek(0);
    ring.release((first + recordAt(ring, first).size) >>> 0);
    expect(ring.roomAt(position)).toBe(size);
    expect(ring.tryWrite(position, KIND, 0, 0, 5, payloadOf(5, size - RECORD_HEADER_BYTES + 1))).toBe(-1);
    position = ring.tryWrite(position, KIND, 0, 0, 5, payloadOf(5, size - RECORD_HEADER_BYTES));
    expect(position).toBe(4096 + size);
    ring.commit(position);
    expect(drain(ring, size).records.map((r) => r.id)).toEqual([2, 3, 4, 5]);
  });

  test("a record that would cross the end goes to the start behind a pad; the consumer skips the pad", () => {
    const ring = new ByteRing(ByteRing.allocate(4096));
    let position = ring.tryWrite(0, KIND, 0, 0, 1, payloadOf(1, 3000 - RECORD_HEADER_BYTES));
    ring.commit(position);
    const read = drain(ring, 0).position;
    // 1096 bytes left before the end: a 2000-byte record wraps, the tail becomes a pad record.
    position = ring.tryWrite(position, KIND, 0, 0, 2, payloadOf(2, 2000 - RECORD_HEADER_BYTES));
    expect(position).toBe(4096 + 2000);
    expect(ring.view.getUint8(3000)).toBe(PAD);
    expect(ring.recordSize(3000)).toBe(1096);
    ring.commit(position);
    const { records, position: after } = drain(ring, read);
    expect(records.map((r) => r.id)).toEqual([2]);
    expect(records[0]!.payload).toEqual(payloadOf(2, 2000 - RECORD_HEADER_BYTES));
    expect(ring.offsetOf(after)).toBe(2000);
    expect(ring.used).toBe(0);
  });

  test("fewer than a header's bytes left at the end: no pad is written, and the consumer skips them all the same", () => {
    const ring = new ByteRing(ByteRing.allocate(4096));
    let position = ring.tryWrite(0, KIND, 0, 0, 1, payloadOf(1, 4090 - RECORD_HEADER_BYTES));
    ring.commit(position);
    const read = drain(ring, 0).position;
    ring.data[4090] = 0xee; // stale bytes where no pad fits: they must never be read as a record
    position = ring.tryWrite(position, KIND, 0, 0, 2, payloadOf(2, 20));
    expect(position).toBe(4096 + 32);
    expect(ring.data[4090]).toBe(0xee);
    ring.commit(position);
    expect(drain(ring, read).records.map((r) => [r.id, r.payload.length])).toEqual([[2, 20]]);
  });

  test("30 000 records of random sizes through a 4 KiB ring, wrapping ~750 times: every byte comes back", () => {
    const ring = new ByteRing(ByteRing.allocate(4096));
    const random = seededRandom(7);
    let write = 0;
    let read = 0;
    let next = 1;
    let expected = 1;
    let wrong = 0;
    while (expected <= 30_000) {
      for (;;) {
        const length = Math.floor(random() * random() * ring.maxPayload);
        const after = next <= 30_000 ? ring.tryWrite(write, KIND, 0, 0, next, payloadOf(next, length)) : -1;
        if (after < 0) break;
        write = after;
        next++;
      }
      ring.commit(write);
      const { records, position } = drain(ring, read);
      read = position;
      for (const record of records) {
        if (record.id !== expected || !record.payload.every((byte, i) => byte === ((expected * 31 + i) & 0xff)))
          wrong++;
        expected++;
      }
    }
    expect(wrong).toBe(0);
    expect(read).toBe(write);
    expect(read).toBeGreaterThan(600 * 4096);
  });
});

describe("ByteRing: oversized records", () => {
  test("a record of maxPayload always fits an empty ring, wherever its positions are; a larger one may not", () => {
    const ring = new ByteRing(ByteRing.allocate(4096));
    expect(ring.maxPayload).toBe(1024 - RECORD_HEADER_BYTES);
    const largest = payloadOf(9, ring.maxPayload);
    let position = 0;
    for (let step = 0; step < 64; step++) {
      // Move both positions on by a different amount each time, so the record starts at every offset.
      const filler = ring.tryWrite(position, KIND, 0, 0, 0, new Uint8Array(step * 7));
      ring.commit(filler);
      position = drain(ring, position).position;
      const after = ring.tryWrite(position, KIND, 0, 0, 9, largest);
      expect(after).toBeGreaterThan(-1);
      ring.commit(after);
      const { records, position: read } = drain(ring, position);
      expect(records.map((r) => r.payload)).toEqual([largest]);
      position = read;
    }
    // Four times maxPayload is the whole ring: a record that large can never be written.
    expect(ring.reserve(position, 4096 + 1)).toBe(-1);
    expect(ring.tryWrite(position, KIND, 0, 0, 10, new Uint8Array(4096))).toBe(-1);
    expect(ring.used).toBe(0);
  });
});

describe("ByteRing: wake-ups", () => {
  test("a waiting consumer wakes on a commit and on a nudge; a closed ring wakes and never parks anyone", async () => {
    const ring = new ByteRing(ByteRing.allocate(4096));
    const data = ring.waitForData(0, 20_000);
    expect(data).toBeInstanceOf(Promise);
    ring.commit(ring.tryWrite(0, KIND, 0, 0, 1, payloadOf(1, 4)));
    expect(await within(data!, 5000, "the wake-up on a commit")).toBe("ok");
    expect(ring.waitForData(0)).toBeUndefined(); // data is there: no wait at all

    let asked = false;
    const position = ring.writePosition;
    const other = ring.waitForDataOr(position, () => asked, 20_000);
    expect(other).toBeInstanceOf(Promise);
    asked = true;
    ring.nudge();
    expect(await within(other!, 5000, "the wake-up on a nudge")).toBe("ok");
    expect(ring.waitForDataOr(position, () => asked)).toBeUndefined();

    const room = ring.waitForRoom(ring.readPosition, 20_000);
    expect(room).toBeInstanceOf(Promise);
    expect(ring.producerWaiting).toBe(true);
    ring.close();
    expect(await within(room!, 5000, "the wake-up on close")).toBe("ok");
    expect(ring.producerWaiting).toBe(false);
    expect(ring.waitForData(position)).toBeUndefined();
    expect(ring.waitForRoom(ring.readPosition)).toBeUndefined();
  });

  test("a side whose looks keep finding nothing looks less often; being rung or finding data brings it back", async () => {
    const ring = new ByteRing(ByteRing.allocate(4096));
    const consumer = new ByteRing(ring.buffer); // the other thread's view: its own count of quiet looks
    expect(consumer.quiet).toBe(false);
    for (let look = 1; look <= 4; look++) expect(await consumer.waitForData(0, 1)).toBe("timed-out");
    expect(consumer.quiet).toBe(true);
    expect(ring.quiet).toBe(false); // the producer's side waited for nothing
    const data = consumer.waitForData(0); // now bounded by two seconds, not a quarter of one
    ring.commit(ring.tryWrite(0, KIND, 0, 0, 1, payloadOf(1, 4)));
    expect(await within(data!, 5000, "the quiet side's wake-up on a commit")).toBe("ok");
    expect(consumer.quiet).toBe(false);

    for (let look = 1; look <= 4; look++) await consumer.waitForData(ring.writePosition, 1);
    expect(consumer.quiet).toBe(true);
    expect(consumer.waitForData(0)).toBeUndefined(); // what it waits for is there: a find, not a quiet look
    expect(consumer.quiet).toBe(false);
  });

  test("across a real Worker thread, both ways through two 4 KiB rings: every record echoed in order, woken, not polled", async () => {
    const input = new ByteRing(ByteRing.allocate(4096));
    const output = new ByteRing(ByteRing.allocate(4096));
    const worker = new Worker(join(import.meta.dir, "../support/ring-echo-worker.ts"));
    const reported = new Promise<EchoReport>(
      (resolve) => (worker.onmessage = (event) => resolve(event.data as EchoReport)),
    );
    worker.postMessage({ input: input.buffer, output: output.buffer });
    const count = 20_000;
    const random = seededRandom(11);
    const lengths = Array.from({ length: count }, () => Math.floor(random() * 600));
    let timedOut = 0;
    let producerWaits = 0;
    let consumerWaits = 0;
    // Waits as the worker's do (and the engine's): a wake-up that never comes costs a look after
    // WAKE_CHECK_MS, and shows as a timed-out wait.
    const waited = async (wait: Promise<unknown> | undefined) => {
      if (wait !== undefined && (await wait) === "timed-out") timedOut++;
      return wait !== undefined;
    };
    const producer = (async () => {
      let position = 0;
      for (let id = 1; id <= count; ) {
        const after = input.tryWrite(position, KIND, 0, 0, id, payloadOf(id, lengths[id - 1]!));
        if (after >= 0) {
          position = after;
          id++;
          if (id % 8 === 0 || id > count) input.commit(position);
          continue;
        }
        input.commit(position);
        if (await waited(input.waitForRoom(input.readPosition))) producerWaits++;
      }
      input.close();
    })();
    let wrong = 0;
    let expected = 1;
    const consumer = (async () => {
      let position = 0;
      while (expected <= count) {
        const at = output.peek(position);
        if (at < 0) {
          if (await waited(output.waitForData(position))) consumerWaits++;
          continue;
        }
        const record = recordAt(output, at);
        if (
          record.id !== expected ||
          record.payload.length !== lengths[expected - 1] ||
          !record.payload.every((b, i) => b === ((expected * 31 + i) & 0xff))
        ) {
          wrong++;
        }
        expected++;
        position = (at + record.size) >>> 0;
        output.release(position);
      }
    })();
    try {
      await within(Promise.all([producer, consumer]), 60_000, "20 000 records echoed through the worker");
      const report = await within(reported, 10_000, "the worker's report");
      expect(wrong).toBe(0);
      expect(expected - 1).toBe(count);
      expect(report.records).toBe(count);
      // Both sides of both rings waited (the rings are small), and the waits ended by wake-ups: a
      // doorbell that did not ring would leave every wait to its timed look. Some may still end so — the
      // other thread not run for 250 ms on a loaded machine, or a resolution the runtime lost (Bun's
      // Atomics.waitAsync has had such bugs): the timed look is there for that, a delay, never a hang.
      const waits = producerWaits + consumerWaits + report.dataWaits + report.roomWaits;
      expect(Math.min(producerWaits, consumerWaits, report.dataWaits, report.roomWaits)).toBeGreaterThan(0);
      expect(timedOut + report.timedOut).toBeLessThanOrEqual(Math.max(2, waits / 10));
    } finally {
      worker.terminate();
    }
  }, 90_000);
});
