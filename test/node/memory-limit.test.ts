import { describe, expect, test } from "bun:test";
import { MemoryGuard, type WatchedWorker, defaultMemoryLimit } from "../../src/node/engine/memory-limit.ts";
import { totalmem } from "node:os";

const MB = 1024 * 1024;

describe("MemoryGuard", () => {
  const heaps = (...mb: number[]): WatchedWorker[] => mb.map((size) => ({ heapBytes: size * MB }));

  test("below the limit nobody is ended, however large a worker's heap", () => {
    const guard = new MemoryGuard(1000 * MB);
    for (let now = 0; now < 10_000; now += 50) expect(guard.check(heaps(900, 5), 999 * MB, now)).toBe(-1);
  });

  test("over the limit, the worker whose own heap is the largest is ended, whatever it is doing", () => {
    const guard = new MemoryGuard(1000 * MB);
    expect(guard.check(heaps(3, 700, 40), 500 * MB, 0)).toBe(-1);
    expect(guard.check(heaps(3, 700, 40), 1100 * MB, 50)).toBe(1);
    const again = new MemoryGuard(1000 * MB);
    expect(again.check(heaps(300, 2, 600, 10), 1100 * MB, 0)).toBe(2);
  });

  test("over the limit with no worker holding an eighth of it, nobody is ended: the memory is not in a worker", () => {
    const guard = new MemoryGuard(1000 * MB);
    for (let now = 0; now < 10_000; now += 50) expect(guard.check(heaps(100, 124, 3), 1500 * MB, now)).toBe(-1);
    // Once one grows past it, that one goes.
    expect(guard.check(heaps(100, 126, 3), 1500 * MB, 10_000)).toBe(1);
    expect(new MemoryGuard(1000 * MB, 64 * MB, 5000, 10 * MB).check(heaps(1, 11), 1500 * MB, 0)).toBe(1);
  });

  test("after an end it waits while memory falls, and judges again when memory grows back or the wait is over", () => {
    const guard = new MemoryGuard(1000 * MB, 64 * MB, 5000);
    const workers = heaps(600, 300);
    expect(guard.check(workers, 1200 * MB, 0)).toBe(0);
    // The ended worker's heap goes back slowly, and stays over the limit for a while: nobody else pays,
    // not even while the engine still sees the ended worker's last figures.
    expect(guard.check(workers, 1200 * MB, 50)).toBe(-1);
    workers[0]!.heapBytes = 0; // its replacement
    expect(guard.check(workers, 1150 * MB, 100)).toBe(-1);
    expect(guard.check(workers, 1100 * MB, 150)).toBe(-1);
    expect(guard.check(workers, 1150 * MB, 200)).toBe(-1); // within the regrowth margin
    // It grows again: someone is growing now, and the largest heap is judged.
    expect(guard.check(workers, 1170 * MB, 250)).toBe(1);
    // Stuck over the limit without growing: judged again once the wait is over.
    expect(guard.check(workers, 1170 * MB, 300)).toBe(-1);
    expect(guard.check(workers, 1170 * MB, 5300)).toBe(1);
  });

  test("the resident bytes are read again sooner the closer they are to the limit, and at once while settling", () => {
    const guard = new MemoryGuard(16_384 * MB);
    expect(guard.nextLookMs(200 * MB)).toBe(1000); // far below: once a second
    expect(guard.nextLookMs(16_000 * MB)).toBe(48); // 384 MB of headroom at 8 MB per ms
    expect(guard.nextLookMs(16_384 * MB)).toBe(0);
    expect(guard.nextLookMs(20_000 * MB)).toBe(0);
    // A node of 250 MB (as the tests start them) reads them on every watch.
    expect(new MemoryGuard(250 * MB).nextLookMs(65 * MB)).toBeLessThan(50);
    const settling = new MemoryGuard(1000 * MB);
    expect(settling.check(heaps(600, 300), 1200 * MB, 0)).toBe(0);
    expect(settling.nextLookMs(900 * MB)).toBe(0);
  });

  test("the default is 80% of the machine's memory (or of a lower container limit)", () => {
    const limit = defaultMemoryLimit();
    expect(limit).toBeGreaterThan(0);
    expect(limit).toBeLessThanOrEqual(Math.floor(totalmem() * 0.8));
  });
});
