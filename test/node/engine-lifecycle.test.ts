import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { EngineHarness } from "../support/engine.ts";
import { spawnBun } from "../support/processes.ts";
import { waitFor } from "../support/wait.ts";

/** The tasks these tests run (a typed package of their own). */
const dir = join(import.meta.dir, "../fixtures/flow-tasks");

describe("lifecycle", () => {
  test("sleep pauses workers after their current item, wakeup resumes, idle and empty resolve", async () => {
    const harness = await EngineHarness.start(dir, [{ export: "cpu" }], { workers: 2 });
    try {
      expect(harness.engine.idleWorkers).toBe(2);
      await harness.engine.whenIdle();
      await harness.engine.sleep();
      expect(harness.engine.isAsleep).toBe(true);
      harness.feed(Array.from({ length: 20 }, (_, i) => i));
      // Every worker said it is parked (the engine's count of idle workers leaves out sleeping ones):
      // the items wait in the rings, none has run.
      await harness.engine.whenAsleep();
      expect(harness.engine.idleWorkers).toBe(0);
      expect(harness.engine.stats()[0]!.processed).toBe(0);
      expect(harness.outputCount).toBe(0);
      expect(harness.engine.inFlight).toBe(20);
      harness.engine.wakeup();
      await harness.waitEmpty();
      expect(harness.outputCount).toBe(20);
      await harness.engine.whenIdle();
      // Sleep while busy: each worker finishes the item it is on, then stops.
      harness.feed(Array.from({ length: 200 }, (_, i) => i));
      await waitFor(() => harness.engine.stats()[0]!.processed, {
        what: "the workers to start on the 200",
        until: (n) => n > 20,
      });
      await harness.engine.sleep();
      // Once sleep() resolves, what the workers did is handed out and they are parked: what they ran is
      // exactly what came out, and the rest is still in flight.
      const frozen = harness.outputCount;
      expect(harness.engine.stats()[0]!.processed).toBe(frozen);
      expect(harness.engine.inFlight).toBe(220 - frozen);
      expect(frozen).toBeLessThan(220);
      harness.engine.wakeup();
      await harness.waitEmpty();
      expect(harness.outputCount).toBe(220);
    } finally {
      await harness.engine.reset();
    }
    await expect(harness.engine.whenEmpty()).rejects.toThrow(/reset/);
    expect(() => harness.feed([1])).toThrow(/reset/);
  });

  test("an idle engine looks at its workers once a second; a feed brings back the look every 50 ms", async () => {
    const harness = await EngineHarness.start(dir, [{ export: "cpu" }], { workers: 2 });
    try {
      await waitFor(() => harness.engine.watchEveryMs, { what: "the idle look", until: (ms) => ms === 1000 });
      harness.feed(Array.from({ length: 50 }, (_, i) => i));
      expect(harness.engine.watchEveryMs).toBe(50); // at once: a task that hangs is caught on time
      await harness.waitEmpty();
      expect(harness.outputCount).toBe(50);
      await waitFor(() => harness.engine.watchEveryMs, { what: "the idle look again", until: (ms) => ms === 1000 });
    } finally {
      await harness.engine.reset();
    }
  });

  test("sleep() always reaches idle workers: 300 sleep and wakeup cycles, none lost", async () => {
    // An idle worker waits on its input ring with no timeout: a nudge lost between its last look at the
    // control word and its wait would leave sleep() pending for good, and this test would time out.
    const harness = await EngineHarness.start(dir, [{ export: "identity" }], { workers: 2 });
    try {
      for (let cycle = 0; cycle < 300; cycle++) {
        await harness.engine.whenIdle();
        await harness.engine.sleep();
        expect(harness.engine.isAsleep).toBe(true);
        harness.engine.wakeup();
        if (cycle % 50 === 0) {
          harness.feed([cycle]);
          await harness.waitEmpty();
        }
      }
      expect(harness.outputCount).toBe(6);
    } finally {
      await harness.engine.reset();
    }
  }, 60_000);

  test("after reset a new engine can be set up; a process that reset (or whose setup failed) exits by itself", async () => {
    const child = spawnBun([join(import.meta.dir, "../support/engine-exit.ts"), dir]);
    const code = await child.waitExit(20_000);
    expect(child.stdout).toContain("outputs 1000");
    expect(child.stdout).toContain("second setup outputs 10");
    expect(child.stdout).toContain(
      'third setup: task 2 ("tasks#noSuchTask"): package "tasks" has no export "noSuchTask"',
    );
    expect(code).toBe(0);
  }, 60_000);
});
