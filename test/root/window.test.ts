import { describe, expect, test } from "bun:test";
import { AdaptiveWindow } from "../../src/root/window.ts";

/** The adaptive window on its own, its clock given by hand (src/root/window.ts). */
describe("AdaptiveWindow", () => {
  test("starts at four times its floor, kept within [floor, max]", () => {
    expect(new AdaptiveWindow(8, 1000).size).toBe(32);
    expect(new AdaptiveWindow(8, 20).size).toBe(20);
    expect(new AdaptiveWindow(8, 1000, 2).size).toBe(8);
    expect(new AdaptiveWindow(8, 1000, 100).size).toBe(100);
  });

  test("a starved node gets ×1.5 + 1, up to its grant", () => {
    const window = new AdaptiveWindow(4, 100, 10);
    const sizes: number[] = [];
    for (let now = 0; sizes.length < 8; now += 1) {
      window.starved(now);
      sizes.push(window.size);
    }
    expect(sizes).toEqual([16, 25, 39, 60, 91, 100, 100, 100]);
  });

  test("it grows at most once per fastest round trip, so that the next report answers the last growth", () => {
    const window = new AdaptiveWindow(4, 10_000, 10);
    window.sample(50, 2); // fastest round trip: 50 ms
    window.starved(1000);
    expect(window.size).toBe(16);
    window.starved(1049); // an echo from before the growth
    expect(window.size).toBe(16);
    window.starved(1050);
    expect(window.size).toBe(25);
  });

  test("a round trip far above the fastest while no worker idles is queueing: ×0.9, never below the floor", () => {
    const window = new AdaptiveWindow(10, 1000, 100);
    window.sample(10, 0);
    expect(window.minLatencyMs).toBe(10);
    window.sample(50, 0); // 10 × 4 + 10 = 50: not above
    expect(window.size).toBe(100);
    window.sample(51, 0);
    expect(window.size).toBe(90);
    window.sample(500, 3); // idle workers: the time was not queueing
    expect(window.size).toBe(90);
    for (let i = 0; i < 100; i++) window.sample(10_000, 0);
    expect(window.size).toBe(10);
  });

  test("the fastest round trip creeps up 1% a sample, so it follows a node whose work got slower", () => {
    const window = new AdaptiveWindow(4, 100);
    window.sample(100, 0);
    window.sample(200, 0);
    expect(window.minLatencyMs).toBeCloseTo(101, 9);
    window.sample(200, 0);
    expect(window.minLatencyMs).toBeCloseTo(102.01, 9);
    window.sample(50, 0);
    expect(window.minLatencyMs).toBe(50);
  });

  test("a feed frame carries a quarter of the window, at least one item, at most maxBatch", () => {
    expect(new AdaptiveWindow(4, 1000, 100).batchSize(4096)).toBe(25);
    expect(new AdaptiveWindow(4, 1000, 101).batchSize(4096)).toBe(26);
    expect(new AdaptiveWindow(4, 1000, 100).batchSize(10)).toBe(10);
    expect(new AdaptiveWindow(1, 1000, 1).batchSize(4096)).toBe(1);
  });
});
