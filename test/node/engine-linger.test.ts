import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { EngineHarness } from "../support/engine.ts";
import { waitFor } from "../support/wait.ts";

/**
 * While slow items keep finishing, the engine looks at the output rings on its results' linger timer
 * instead of being woken by every commit. Results must still go out within that linger (not when a
 * batch fills), the engine must go back to waiting for commits once the stream stops, and `sleep()`
 * must hand out everything finished.
 */
const dir = join(import.meta.dir, "../fixtures/engine-tasks");
const slow = (count: number, ms: number, from = 0) => Array.from({ length: count }, (_, i) => ({ id: from + i, ms }));
const ids = (harness: EngineHarness) => harness.values().map((value) => (value as { id: number }).id);

describe("the results' linger while slow items keep finishing", () => {
  test("outputs go out while most items are still in flight, each once", async () => {
    const harness = await EngineHarness.start(dir, [{ export: "blockMs" }], { workers: 2 });
    let inFlightAtFirst = -1;
    harness.onBatch = () => {
      if (inFlightAtFirst < 0) inFlightAtFirst = harness.engine.inFlight;
    };
    try {
      harness.feed(slow(300, 3)); // 450 ms of work on 2 workers
      await harness.waitEmpty();
      // The first results did not wait for the others: more than half were still in flight then.
      expect(inFlightAtFirst).toBeGreaterThan(150);
      expect(ids(harness).sort((a, b) => a - b)).toEqual(slow(300, 3).map((item) => item.id));
      expect(harness.done.length).toBe(300);
    } finally {
      await harness.engine.reset();
    }
  }, 60_000);

  test("after a stream of slow items, a long one and a lone one fed later still come back", async () => {
    const harness = await EngineHarness.start(dir, [{ export: "blockMs" }], { workers: 2 });
    try {
      harness.feed([...slow(40, 3), { id: 40, ms: 400 }]);
      await harness.waitEmpty();
      expect(harness.done.length).toBe(41);
      await Bun.sleep(30); // the stream is over: no linger runs, the engine waits for a commit
      harness.feed([{ id: 41, ms: 3 }]);
      await waitFor(() => harness.done.length, { what: "the lone item's Done", until: (n) => n === 42 });
      expect(ids(harness).sort((a, b) => a - b)).toEqual(slow(42, 3).map((item) => item.id));
    } finally {
      await harness.engine.reset();
    }
  }, 60_000);

  test("the engine follows how late its thread runs the linger's timer", async () => {
    const harness = await EngineHarness.start(dir, [{ export: "blockMs" }], { workers: 2 });
    try {
      harness.feed(slow(2000, 2)); // 2 s of work on 2 workers: a linger timer is set most of the time
      await waitFor(() => harness.done.length, { what: "the first Done records" });
      // Hold the engine's thread (this one) for 50 ms at a time: a linger timer set meanwhile fires late.
      const lag = await waitFor(
        () => {
          const until = performance.now() + 50;
          while (performance.now() < until) {}
          return harness.engine.lagMs;
        },
        { what: "a lag above 10 ms", until: (ms) => ms > 10 },
      );
      expect(lag).toBeLessThan(1000);
      await harness.waitEmpty();
      expect(ids(harness).sort((a, b) => a - b)).toEqual(slow(2000, 2).map((item) => item.id));
    } finally {
      await harness.engine.reset();
    }
  }, 60_000);

  test("sleep() in the middle of the stream hands out every finished item; wakeup() finishes the rest", async () => {
    const harness = await EngineHarness.start(dir, [{ export: "blockMs" }], { workers: 2 });
    try {
      harness.feed(slow(200, 3));
      await waitFor(() => harness.done.length, { what: "the first Done records" });
      await harness.engine.sleep();
      // Asleep: nothing is held back in a linger — what the workers finished has been handed out.
      expect(harness.done.length).toBe(harness.engine.itemsDone);
      expect(harness.engine.inFlight).toBeGreaterThan(0);
      harness.engine.wakeup();
      await harness.waitEmpty();
      expect(ids(harness).sort((a, b) => a - b)).toEqual(slow(200, 3).map((item) => item.id));
    } finally {
      await harness.engine.reset();
    }
  }, 60_000);
});
