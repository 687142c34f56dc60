import { describe, expect, test } from "bun:test";
import { MemoryGuard, type WatchedWorker, defaultMemoryLimit } from "../../src/node/engine/memory-limit.ts";
import { totalmem } from "node:os";

const MB = 1024 * 1024;

describe("MemoryGuard", () => {
  test("below the limit nobody is ended, however long an item runs", () => {
    const guard = new MemoryGuard(1000 * MB);
    const workers: WatchedWorker[] = [{ busy: true, position: 8, completed: 0 }];
    for (let now = 0; now < 10_000; now += 50) expect(guard.check(workers, 999 * MB, now)).toBe(-1);
  });

  test("over the limit, the busy worker on the same item the longest is ended; an idle one never", () => {
    const guard = new MemoryGuard(1000 * MB);
    const workers: WatchedWorker[] = [
      { busy: false, position: 0, completed: 900 }, // idle since the start
      { busy: true, position: 64, completed: 10 }, // stuck on one item
      { busy: true, position: 128, completed: 500 }, // moving on
    ];
    for (let now = 0; now < 500; now += 50) {
      workers[2]!.position += 32;
      expect(guard.check(workers, 500 * MB, now)).toBe(-1);
    }
    workers[2]!.position += 32;
    expect(guard.check(workers, 1100 * MB, 500)).toBe(1);
  });

  test("among workers on their items equally long, the one that finished the most goes (a leak grows with items)", () => {
    const guard = new MemoryGuard(1000 * MB);
    const workers: WatchedWorker[] = [
      { busy: true, position: 1, completed: 10 },
      { busy: true, position: 2, completed: 20 },
    ];
    for (let now = 0; now <= 300; now += 50) {
      workers[0]!.position++;
      workers[1]!.position++;
      expect(guard.check(workers, now < 300 ? 10 * MB : 1200 * MB, now)).toBe(now < 300 ? -1 : 1);
    }
  });

  test("after an end it waits while memory falls, and judges again when memory grows back or the wait is over", () => {
    const guard = new MemoryGuard(1000 * MB, 64 * MB, 5000);
    const workers: WatchedWorker[] = [
      { busy: true, position: 1, completed: 0 },
      { busy: true, position: 2, completed: 0 },
    ];
    expect(guard.check(workers, 1200 * MB, 0)).toBe(0);
    // The ended worker's heap goes back slowly, and stays over the limit for a while: nobody else pays.
    expect(guard.check(workers, 1200 * MB, 50)).toBe(-1);
    expect(guard.check(workers, 1150 * MB, 100)).toBe(-1);
    expect(guard.check(workers, 1100 * MB, 150)).toBe(-1);
    expect(guard.check(workers, 1150 * MB, 200)).toBe(-1); // within the regrowth margin
    // It grows again: someone else is growing now.
    expect(guard.check(workers, 1170 * MB, 250)).toBe(1);
    // Stuck over the limit without growing: judged again once the wait is over.
    expect(guard.check(workers, 1170 * MB, 300)).toBe(-1);
    expect(guard.check(workers, 1170 * MB, 5300)).toBe(0);
  });

  test("the default is 80% of the machine's memory (or of a lower container limit)", () => {
    const limit = defaultMemoryLimit();
    expect(limit).toBeGreaterThan(0);
    expect(limit).toBeLessThanOrEqual(Math.floor(totalmem() * 0.8));
  });
});
