import { describe, expect, test } from "bun:test";
import { COMBINER_QUEUE_MS } from "../../src/protocol/combiners.ts";
import { ThreadLag, queueCap, resultLingerMs } from "../../src/node/engine/pacing.ts";

describe("queueCap", () => {
  test("a worker's queue holds about 12 ms of its work when the engine's thread is on time", () => {
    expect(queueCap(2, 1, false, 0)).toBe(6);
    expect(queueCap(1, 1, false, 0)).toBe(12);
  });

  test("items under half a millisecond go in spans of 4 ms", () => {
    expect(queueCap(0.01, 1, false, 0)).toBe(400);
  });

  test("long items keep two queued, however late the thread", () => {
    expect(queueCap(20, 1, false, 0)).toBe(2);
    expect(queueCap(200, 1, false, 40)).toBe(2);
  });

  test("items of a second or more queue none behind the ones running: a refill costs under 1% of one", () => {
    expect(queueCap(1000, 1, false, 0)).toBe(1);
    expect(queueCap(60_000, 1, false, 0)).toBe(1);
    expect(queueCap(999, 1, false, 0)).toBe(2);
    expect(queueCap(2000, 3, false, 0)).toBe(3); // its places, no more
    // On a thread running late, a refill may take longer: the bound grows with the lag.
    expect(queueCap(2000, 1, false, 10)).toBe(2); // 100 × (10 + 20) ms
    expect(queueCap(3000, 1, false, 10)).toBe(1);
    // With a combiner, the queue covers the partial's linger as before.
    expect(queueCap(5000, 1, true, 0)).toBe(2);
  });

  test("the span grows by twice the thread's lag, up to 50 ms of lag", () => {
    expect(queueCap(2, 1, false, 10)).toBe(16); // (12 + 20) / 2
    expect(queueCap(0.01, 1, false, 3)).toBe(1000); // (4 + 6) / 0.01
    expect(queueCap(2, 1, false, 50)).toBe(56);
    expect(queueCap(2, 1, false, 500)).toBe(56);
  });

  test("with a combiner the queue covers the partial's linger", () => {
    expect(queueCap(2, 1, true, 0)).toBe(Math.ceil(COMBINER_QUEUE_MS / 2));
  });

  test("a worker running several items at once keeps that many places besides its queue", () => {
    expect(queueCap(2, 50, false, 0)).toBe(6 + 49);
  });
});

describe("resultLingerMs", () => {
  test("items under half a millisecond do not linger", () => {
    expect(resultLingerMs(0, 4)).toBe(0);
    expect(resultLingerMs(0.49, 1)).toBe(0);
  });

  test("results wait for about 20 items' worth of the workers' places", () => {
    expect(resultLingerMs(1, 4)).toBe(5); // 20 × 1 ms over 4 places
    expect(resultLingerMs(1, 2)).toBe(10);
    expect(resultLingerMs(2, 8)).toBe(5);
  });

  test("at least a timer tick, at most 10 ms, whatever the task takes", () => {
    expect(resultLingerMs(0.5, 64)).toBe(1);
    expect(resultLingerMs(2, 4)).toBe(10);
    expect(resultLingerMs(20_000, 1)).toBe(10);
  });

  test("with no worker alive, as for one place", () => {
    expect(resultLingerMs(0.5, 0)).toBe(10);
  });
});

describe("ThreadLag", () => {
  test("is zero until a timer fires late", () => {
    const lag = new ThreadLag();
    lag.fired(100); // never armed: no sample
    expect(lag.ms).toBe(0);
    lag.armed(4, 0);
    lag.fired(3.5); // a timer may fire a little early: no lag
    expect(lag.ms).toBe(0);
  });

  test("follows a late timer by a quarter of the gap at once", () => {
    const lag = new ThreadLag();
    lag.armed(4, 0);
    lag.fired(44);
    expect(lag.ms).toBeCloseTo(10);
    lag.armed(4, 100);
    lag.fired(144);
    expect(lag.ms).toBeCloseTo(17.5);
  });

  test("falls back slowly once the timer is on time again, and only once per firing", () => {
    const lag = new ThreadLag();
    lag.armed(0, 0);
    lag.fired(40);
    expect(lag.ms).toBeCloseTo(10);
    lag.fired(1000); // fired twice without being armed: the second is not a sample
    expect(lag.ms).toBeCloseTo(10);
    let now = 1000;
    for (let i = 0; i < 8; i++) {
      lag.armed(4, now);
      lag.fired(now + 4);
      now += 10;
    }
    expect(lag.ms).toBeCloseTo(10 * (31 / 32) ** 8);
    expect(lag.ms).toBeGreaterThan(7);
  });
});
