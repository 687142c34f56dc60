import { describe, expect, test } from "bun:test";
import { type ProgressSample, StallGuard } from "../../src/node/engine/stall-guard.ts";

describe("StallGuard", () => {
  test("a busy worker that gets nothing done for the timeout is the one; progress or idleness resets its clock", () => {
    const guard = new StallGuard(1000);
    const workers: ProgressSample[] = [
      { busy: true, progress: 0 }, // moves on
      { busy: true, progress: 0 }, // stuck from t=0
      { busy: false, progress: 0 }, // idle: never stuck
    ];
    for (let now = 0; now < 1000; now += 50) {
      workers[0]!.progress++;
      expect(guard.check(workers, now)).toBe(-1);
    }
    workers[0]!.progress++;
    expect(guard.check(workers, 1000)).toBe(1);
    // Its replacement starts afresh, even at the same progress count.
    for (let now = 1050; now < 2050; now += 50) {
      workers[0]!.progress++;
      expect(guard.check(workers, now)).toBe(-1);
    }
    workers[0]!.progress++;
    expect(guard.check(workers, 2050)).toBe(1);
  });

  test("a worker held (not busy) for longer than the timeout, then busy again, gets a full timeout", () => {
    const guard = new StallGuard(1000);
    const workers: ProgressSample[] = [{ busy: false, progress: 5 }];
    expect(guard.check(workers, 0)).toBe(-1);
    expect(guard.check(workers, 5000)).toBe(-1);
    workers[0]!.busy = true;
    expect(guard.check(workers, 5050)).toBe(-1);
    expect(guard.check(workers, 6000)).toBe(-1);
    expect(guard.check(workers, 6050)).toBe(0);
  });
});
