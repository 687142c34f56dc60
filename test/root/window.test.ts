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

  test("a standing backlog on the node shrinks it ×0.9 once per fastest round trip, never below the floor", () => {
    const window = new AdaptiveWindow(8, 1000, 300);
    for (let now = 0; now < 100; now += 10) window.backlog(true, now); // no round trip known yet: nothing
    expect(window.size).toBe(300);
    window.backlog(false, 100);
    window.sample(20, 0); // fastest round trip: 20 ms
    window.backlog(true, 0); // the first report of a standing backlog starts the count
    expect(window.size).toBe(300);
    window.backlog(true, 19);
    expect(window.size).toBe(300);
    window.backlog(true, 20); // standing for a whole round trip
    expect(window.size).toBe(270);
    window.backlog(true, 30);
    expect(window.size).toBe(270);
    window.backlog(true, 40);
    expect(window.size).toBe(243);
    for (let now = 60; now < 2000; now += 20) window.backlog(true, now);
    expect(window.size).toBe(8);
  });

  test("a report without a standing backlog starts the count again: bursts the workers drain shrink nothing", () => {
    const window = new AdaptiveWindow(8, 1000, 300);
    window.sample(20, 0);
    for (let now = 0; now < 1000; now += 10) window.backlog(now % 30 !== 20, now); // drained every 30 ms, within 20
    expect(window.size).toBe(300);
  });

  test("the bandwidth-delay product does not grow it while the node reports a standing backlog", () => {
    const grown = new AdaptiveWindow(4, 10_000, 20);
    const held = new AdaptiveWindow(4, 10_000, 20);
    for (const window of [grown, held]) {
      window.sample(100, 0); // fastest round trip: 100 ms, as a queue that grew with the window makes it
      window.delivered(0, 0);
    }
    held.backlog(true, 0);
    grown.delivered(100, 100); // 1 item/ms over the round trip: wanted 2 × 100 + 4
    held.delivered(100, 100);
    expect(grown.size).toBe(204);
    expect(held.size).toBe(20);
    held.backlog(false, 150); // drained: it may grow again
    held.delivered(100, 200);
    expect(held.size).toBe(204);
  });

  test("a feed frame carries a quarter of the window, at least one item, at most maxBatch", () => {
    expect(new AdaptiveWindow(4, 1000, 100).batchSize(4096)).toBe(25);
    expect(new AdaptiveWindow(4, 1000, 101).batchSize(4096)).toBe(26);
    expect(new AdaptiveWindow(4, 1000, 100).batchSize(10)).toBe(10);
    expect(new AdaptiveWindow(1, 1000, 1).batchSize(4096)).toBe(1);
  });
});
