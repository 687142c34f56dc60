import { describe, expect, test } from "bun:test";
import {
  LATENCY_BOUNDS_MS,
  LATENCY_BUCKETS,
  addLatency,
  latencyBucket,
  latencyQuantile,
} from "../../src/protocol/latency.ts";

describe("latency buckets", () => {
  test("bounds rise on a log scale and a call lands in the first bucket whose bound it does not exceed", () => {
    expect(LATENCY_BUCKETS).toBe(LATENCY_BOUNDS_MS.length + 1);
    for (let i = 1; i < LATENCY_BOUNDS_MS.length; i++) {
      const ratio = LATENCY_BOUNDS_MS[i]! / LATENCY_BOUNDS_MS[i - 1]!;
      expect(ratio).toBeGreaterThanOrEqual(2);
      expect(ratio).toBeLessThanOrEqual(2.5);
    }
    expect(latencyBucket(0)).toBe(0);
    expect(latencyBucket(0.005)).toBe(0);
    expect(latencyBucket(0.0051)).toBe(1);
    expect(latencyBucket(1)).toBe(LATENCY_BOUNDS_MS.indexOf(1));
    expect(latencyBucket(1.2)).toBe(LATENCY_BOUNDS_MS.indexOf(2.5));
    expect(latencyBucket(100_000)).toBe(LATENCY_BOUNDS_MS.length - 1);
    expect(latencyBucket(1e9)).toBe(LATENCY_BOUNDS_MS.length);
  });

  test("quantiles interpolate inside their bucket; histograms merge by adding", () => {
    const counts = new Array<number>(LATENCY_BUCKETS).fill(0);
    expect(latencyQuantile(counts, 0.99)).toBe(0);
    // 99 calls of ~1 ms (bucket 0.5–1], one of ~40 ms (bucket 25–50].
    counts[latencyBucket(0.9)] = 99;
    counts[latencyBucket(40)] = 1;
    expect(latencyQuantile(counts, 0.5)).toBeGreaterThan(0.5);
    expect(latencyQuantile(counts, 0.5)).toBeLessThanOrEqual(1);
    expect(latencyQuantile(counts, 0.99)).toBe(1); // the 99th of 100 is the last of the fast ones
    expect(latencyQuantile(counts, 0.999)).toBeGreaterThan(25);
    expect(latencyQuantile(counts, 0.999)).toBeLessThanOrEqual(50);
    const other = new Array<number>(LATENCY_BUCKETS).fill(0);
    other[latencyBucket(40)] = 99;
    const merged: number[] = [];
    addLatency(merged, counts);
    addLatency(merged, other);
    expect(merged).toHaveLength(LATENCY_BUCKETS);
    expect(merged[latencyBucket(40)]).toBe(100);
    expect(latencyQuantile(merged, 0.99)).toBeGreaterThan(25);
    const overflow = new Array<number>(LATENCY_BUCKETS).fill(0);
    overflow[LATENCY_BUCKETS - 1] = 3;
    expect(latencyQuantile(overflow, 0.5)).toBe(LATENCY_BOUNDS_MS[LATENCY_BOUNDS_MS.length - 1]!);
  });
});
