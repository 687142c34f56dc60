import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { encode } from "../../src/protocol/codec.ts";
import { RECORD_HEADER_BYTES } from "../../src/protocol/record.ts";
import { EngineHarness } from "../support/engine.ts";
import { waitFor } from "../support/wait.ts";

/** The tasks these tests run (a typed package of their own). */
const dir = join(import.meta.dir, "../fixtures/flow-tasks");

describe("fan-out and memory", () => {
  test("a small fan-out runs where its item runs; a large one is shared with an idle worker", async () => {
    const harness = await EngineHarness.start(dir, [{ export: "split", isGenerator: true }, { export: "slowWhere" }], {
      workers: 2,
    });
    try {
      // One item at a time, so that the other worker is idle (and hungry) all along.
      for (let i = 0; i < 20; i++) {
        harness.feed([2]);
        await harness.waitEmpty();
      }
      const small = harness.values() as Array<{ parent: string; thread: string }>;
      expect(small.length).toBe(40);
      for (const sub of small) expect(sub.thread).toBe(sub.parent);
      harness.outputs.length = 0;
      harness.feed([400]);
      await harness.waitEmpty();
      const large = harness.values() as Array<{ i: number; parent: string; thread: string }>;
      expect(large.length).toBe(400);
      const away = large.filter((sub) => sub.thread !== sub.parent);
      expect(away.length).toBeGreaterThan(50);
      for (const sub of away) expect(sub.i).toBeGreaterThanOrEqual(32); // the first 32 always run at home
    } finally {
      await harness.engine.reset();
    }
  });

  test("a 100 000-way generator keeps memory bounded and busies both workers", async () => {
    const harness = await EngineHarness.start(dir, [{ export: "fanOut", isGenerator: true }, { export: "work" }], {
      workers: 2,
    });
    harness.keepOutputs = false;
    let maxBatch = 0;
    harness.onBatch = (records) => (maxBatch = Math.max(maxBatch, records.length));
    Bun.gc(true);
    const rssBefore = process.memoryUsage.rss();
    let rssPeak = rssBefore;
    const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, process.memoryUsage.rss())), 20);
    let perWorker: number[] = [];
    try {
      harness.feed([100_000]);
      await harness.waitEmpty(60_000);
      perWorker = harness.engine.statsByWorker().map((tasks) => tasks[1]!.processed);
    } finally {
      clearInterval(sampler);
      await harness.engine.reset();
    }
    expect(harness.outputCount).toBe(100_000);
    expect(harness.done.length).toBe(1);
    // ~400 MB of outputs went through; what the process held at any time (garbage included) stayed far
    // below that: the generator is pulled lazily and results leave in bounded batches.
    expect(harness.outputBytes).toBeGreaterThan(400_000_000);
    expect(rssPeak - rssBefore).toBeLessThan(160 * 1024 * 1024);
    expect(maxBatch).toBeLessThan(2 * 1024 * 1024);
    // The one input's sub-items were shared: both workers ran a real part of them.
    expect(perWorker.reduce((a, b) => a + b, 0)).toBe(100_000);
    for (const count of perWorker) expect(count).toBeGreaterThan(30_000);
  }, 90_000);

  test("an item 256 times the ring (16 MB) passes through in both directions", async () => {
    const size = 16 * 1024 * 1024; // far past the ring (64 KiB) and its largest record (16 KiB)
    const harness = await EngineHarness.start(dir, [{ export: "identity" }], {
      workers: 2,
      inputRingBytes: 1 << 16,
      outputRingBytes: 1 << 16,
    });
    try {
      const item = new Uint8Array(size);
      for (let i = 0; i < item.length; i += 4096) item[i] = (i >>> 12) & 255;
      harness.feed([item, "small"]);
      await harness.waitEmpty();
      const values = harness.values();
      const back = values.find((v) => v instanceof Uint8Array) as Uint8Array;
      expect(back.length).toBe(item.length);
      expect(Buffer.from(back).equals(Buffer.from(item))).toBe(true);
      expect(values).toContain("small");
    } finally {
      await harness.engine.reset();
    }
    const made = await EngineHarness.start(dir, [{ export: "big" }, { export: "checksum" }], {
      workers: 1,
      inputRingBytes: 1 << 16,
      outputRingBytes: 1 << 16,
    });
    try {
      made.feed([size]);
      await made.waitEmpty();
      let s = 0;
      for (let i = 0; i < size; i += 4096) s += (i >>> 12) & 255;
      expect(made.values()).toEqual([{ length: size, s }]);
    } finally {
      await made.engine.reset();
    }
  }, 60_000);

  test("a feeder that awaits room waits while the rings are full: the backlog never holds more than one batch", async () => {
    const harness = await EngineHarness.start(dir, [{ export: "identity" }], {
      workers: 2,
      inputRingBytes: 1 << 16,
      outputRingBytes: 1 << 16,
    });
    harness.keepOutputs = false;
    const batches = 100;
    const perBatch = 500;
    const batch = Array.from({ length: perBatch }, (_, i) => ({ i, payload: "x".repeat(64) }));
    const sizes = batch.map((item) => RECORD_HEADER_BYTES + encode(item).length);
    const batchBytes = sizes.reduce((sum, size) => sum + size, 0);
    /** How many records of the batch a backlog of `bytes` holds (what waits is always a batch's tail). */
    const recordsIn = (bytes: number) => {
      let count = 0;
      for (let at = sizes.length - 1; bytes > 0; at--, count++) bytes -= sizes[at]!;
      return count;
    };
    let fed = 0;
    let maxBacklog = 0;
    let awaitingRoom = false;
    const feeder = (async () => {
      for (; fed < batches; fed++) {
        awaitingRoom = true;
        await harness.engine.whenRoom();
        awaitingRoom = false;
        harness.feed(batch);
        maxBacklog = Math.max(maxBacklog, harness.engine.backlogBytes);
      }
    })();
    try {
      harness.engine.pauseOutput();
      // Nothing is read, so nothing is Done: the workers run what they were given and no more comes
      // to them, and the feeder waits for room, one batch out at most.
      const state = () => {
        const backlog = harness.engine.backlogBytes;
        const given = fed * perBatch - recordsIn(backlog);
        return { awaitingRoom, backlog, fed, given, ran: harness.engine.stats()[0]!.processed };
      };
      const stalled = await waitFor(state, {
        what: "the workers to run all they were given while the feeder waits for room",
        until: (now) => now.awaitingRoom && now.backlog > 0 && now.ran === now.given,
      });
      expect(stalled.given).toBeGreaterThan(0);
      expect(harness.engine.inFlight).toBe(fed * perBatch); // none Done
      expect(fed).toBeLessThan(batches);
      expect(harness.outputCount).toBe(0);
      harness.engine.resumeOutput();
      await feeder;
      await harness.waitEmpty(60_000);
      expect(harness.outputCount).toBe(batches * perBatch);
      expect(maxBacklog).toBeGreaterThan(0); // it did wait for room at times
      expect(maxBacklog).toBeLessThanOrEqual(batchBytes);
    } finally {
      await harness.engine.reset();
    }
  }, 60_000);

  test("a slow consumer stops the workers instead of growing memory, and nothing is lost", async () => {
    const harness = await EngineHarness.start(dir, [{ export: "fanOut", isGenerator: true }, { export: "identity" }], {
      workers: 2,
      outputRingBytes: 1 << 16,
    });
    harness.keepOutputs = false;
    try {
      harness.engine.pauseOutput();
      harness.feed([200_000]);
      // The worker on the generator fills its small output ring and is held there: no progress while
      // paused (the sub-items it would share with the other go out through that ring too).
      await waitFor(() => harness.engine.heldWorkers, {
        what: "the generator's worker held by its full output ring",
        until: (held) => held >= 1,
      });
      expect(harness.engine.stats()[1]!.processed).toBeLessThan(50_000);
      expect(harness.outputCount).toBe(0);
      // A consumer that reads in bursts: each lets some results out, then holds the workers again.
      for (let burst = 0; burst < 10; burst++) {
        const before = harness.outputCount;
        harness.engine.resumeOutput();
        await waitFor(() => harness.outputCount, {
          what: `results of burst ${burst}`,
          until: (count) => count > before,
        });
        harness.engine.pauseOutput();
      }
      expect(harness.outputCount).toBeLessThan(200_000);
      harness.engine.resumeOutput();
      await harness.waitEmpty(60_000);
      expect(harness.outputCount).toBe(200_000);
    } finally {
      await harness.engine.reset();
    }
  }, 90_000);
});
