/**
 * `AdaptiveWindow`: how many items one node may have in flight, adapted to what that node shows.
 *
 * Items queued inside a node beyond what keeps its workers busy buy nothing: they add latency, memory,
 * and items to re-send if the node dies. Too few, and its workers idle between round trips. So:
 *   - grow (×1.5, at most once per fastest round trip seen, so that a node's report of idle workers
 *     is the answer to the last growth, not an echo from before it) when the node reports idle
 *     workers while the root held items back for lack of window;
 *   - shrink (×0.9, not below the floor) when an item's round trip climbs far above the fastest seen
 *     while no worker is idle — the extra time is queueing, not work;
 * always within [floor, max], the max being what the node granted at setup.
 */
export class AdaptiveWindow {
  /** Items allowed in flight now. */
  size: number;
  #minLatencyMs = Number.POSITIVE_INFINITY;
  /** The last sample's latency (NaN before the first), for the dashboard and metrics. */
  lastLatencyMs = Number.NaN;
  #grownAt = Number.NEGATIVE_INFINITY;

  constructor(
    /** Never below this: enough to give every worker something while a batch travels. */
    readonly floor: number,
    /** Never above this: the node's grant. */
    readonly max: number,
    initial = floor * 4,
  ) {
    this.size = Math.max(floor, Math.min(max, initial));
  }

  /** The node had idle workers while items waited at the root for window: it can take more. */
  starved(now = performance.now()): void {
    const roundTrip = Number.isFinite(this.#minLatencyMs) ? this.#minLatencyMs : 0;
    if (now - this.#grownAt < roundTrip) return;
    this.#grownAt = now;
    this.size = Math.min(this.max, Math.ceil(this.size * 1.5) + 1);
  }

  /** One item's time from sent to done, and the node's idle workers when it came back. */
  sample(latencyMs: number, idleWorkers: number): void {
    this.lastLatencyMs = latencyMs;
    // The reference creeps up 1% a sample, so it follows a node whose work really got slower.
    this.#minLatencyMs = Math.min(this.#minLatencyMs * 1.01, latencyMs);
    if (idleWorkers === 0 && latencyMs > this.#minLatencyMs * 4 + 10) {
      this.size = Math.max(this.floor, Math.floor(this.size * 0.9));
    }
  }

  /** Items per feed frame: a quarter of the window keeps the node fed while the next batch travels. */
  batchSize(maxBatch: number): number {
    return Math.max(1, Math.min(maxBatch, Math.ceil(this.size / 4)));
  }

  get minLatencyMs(): number {
    return this.#minLatencyMs;
  }
}
