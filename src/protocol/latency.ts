/**
 * The latency histogram every task keeps: fixed log-scale buckets (1, 2.5, 5 per decade, 5 µs to
 * 100 s), the same on every worker and node, so histograms merge by adding counts and travel as plain
 * arrays in the status reply. Fixed bounds rather than adaptive ones: a worker records a timed call
 * with a few comparisons and one add in shared memory, and Prometheus wants fixed `le` labels anyway.
 */

/** Upper bounds (inclusive) of the buckets, in milliseconds; one more bucket holds everything above. */
export const LATENCY_BOUNDS_MS: readonly number[] = [
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000,
  50_000, 100_000,
];

/** Buckets per histogram: one per bound, and the overflow. */
export const LATENCY_BUCKETS = LATENCY_BOUNDS_MS.length + 1;

/** The bucket a call of `ms` milliseconds falls in. Fast calls (the common, sampled case) exit first. */
export function latencyBucket(ms: number): number {
  const bounds = LATENCY_BOUNDS_MS;
  for (let bucket = 0; bucket < bounds.length; bucket++) if (ms <= bounds[bucket]!) return bucket;
  return bounds.length;
}

/** Adds `from` into `into`, bucket by bucket (both per-bucket counts, not cumulative). */
export function addLatency(into: number[], from: readonly number[]): void {
  for (let bucket = 0; bucket < LATENCY_BUCKETS; bucket++) into[bucket] = (into[bucket] ?? 0) + (from[bucket] ?? 0);
}

/**
 * The `q` quantile (0..1) in milliseconds, interpolated linearly inside its bucket as Prometheus'
 * `histogram_quantile` does; a quantile in the overflow bucket is the largest bound. 0 when empty.
 */
export function latencyQuantile(counts: readonly number[], q: number): number {
  let total = 0;
  for (const count of counts) total += count;
  if (total <= 0) return 0;
  const rank = q * total;
  let below = 0;
  for (let bucket = 0; bucket < LATENCY_BUCKETS; bucket++) {
    const count = counts[bucket] ?? 0;
    if (count > 0 && below + count >= rank) {
      if (bucket === LATENCY_BOUNDS_MS.length) return LATENCY_BOUNDS_MS[bucket - 1]!;
      const lower = bucket === 0 ? 0 : LATENCY_BOUNDS_MS[bucket - 1]!;
      const upper = LATENCY_BOUNDS_MS[bucket]!;
      return lower + (upper - lower) * Math.max(0, (rank - below) / count);
    }
    below += count;
  }
  return LATENCY_BOUNDS_MS[LATENCY_BOUNDS_MS.length - 1]!;
}
