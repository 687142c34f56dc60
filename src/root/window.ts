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
 *   - shrink (×0.9, at most once per fastest round trip) while the node reports a standing backlog:
 *     items that waited for room in its workers' queues through every report of a round trip. They
 *     are more than its workers need. Round trips alone cannot tell: the fastest one seen creeps up
 *     with the queueing, and a window sized from it grows with the queue it makes (2 ms tasks on
 *     4 workers: 300 items in flight and 120–150 ms round trips where 30 and a few ms keep them busy);
 *   - grow to twice the measured bandwidth-delay product (items done per ms × the fastest round trip):
 *     what keeps every worker busy across a round trip is workers × (1 + round trip ÷ task time), which
 *     is that product; twice it leaves room for the feed to linger until a whole batch has room. While
 *     round trips stay near the fastest, the rate is the window's own, so this doubles the window per
 *     round trip (a slow start); once items queue, the rate stops following the window and neither
 *     does this; nor does it grow while the node reports a standing backlog;
 * always within [floor, max], the max being what the node granted at setup.
 */
export class AdaptiveWindow {
  /** Items allowed in flight now. */
  size: number;
  #minLatencyMs = Number.POSITIVE_INFINITY;
  /** The last sample's latency (NaN before the first), for the dashboard and metrics. */
  lastLatencyMs = Number.NaN;
  #grownAt = Number.NEGATIVE_INFINITY;
  /** Items done since `#rateFrom`, counted over at least one fastest round trip. */
  #doneSince = 0;
  #rateFrom = Number.NaN;
  /** Since when every report of the node said its backlog stood (NaN: the last one did not). */
  #standingSince = Number.NaN;

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

  /** The node's word, with each results frame, on whether items stood waiting in it since its last. */
  backlog(standing: boolean, now?: number): void {
    if (!standing) {
      this.#standingSince = Number.NaN;
      return;
    }
    const at = now ?? performance.now(); // the clock only while a backlog stands: this runs per results frame
    if (Number.isNaN(this.#standingSince)) {
      this.#standingSince = at;
      return;
    }
    // Not before a round trip is known: only then can the node have answered what this window sent.
    if (at - this.#standingSince < this.#minLatencyMs) return;
    this.#standingSince = at; // a round trip for the node to show what the smaller window does
    this.size = Math.max(this.floor, Math.floor(this.size * 0.9));
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

  /** `count` items came back done at `now`: sizes the window from the bandwidth-delay product. */
  delivered(count: number, now: number): void {
    if (Number.isNaN(this.#rateFrom)) {
      this.#rateFrom = now;
      return;
    }
    this.#doneSince += count;
    const span = now - this.#rateFrom;
    const roundTrip = this.#minLatencyMs;
    if (!Number.isFinite(roundTrip) || span < Math.max(roundTrip, 1)) return;
    const product = (this.#doneSince / span) * roundTrip;
    const wanted = Math.ceil(2 * product) + this.floor;
    if (wanted > this.size && Number.isNaN(this.#standingSince)) this.size = Math.min(this.max, wanted);
    this.#doneSince = 0;
    this.#rateFrom = now;
  }

  /** Items per feed frame: a quarter of the window keeps the node fed while the next batch travels. */
  batchSize(maxBatch: number): number {
    return Math.max(1, Math.min(maxBatch, Math.ceil(this.size / 4)));
  }

  get minLatencyMs(): number {
    return this.#minLatencyMs;
  }
}
