import type { ClientTls } from "../protocol/tls.ts";

/**
 * What a user may pass to `new Root(addrs, options)`, in a file of its own so that the declarations
 * users get from it reach none of the root's internals.
 */
export interface RootOptions {
  /** The nodes' shared token (default: `PCLUSTER_TOKEN`). */
  token?: string;
  tls?: ClientTls;
  connectTimeoutMs?: number;
  /** Ping period; a node silent for `heartbeatTimeoutMs` is given up (default 2 s / 15 s). */
  heartbeatMs?: number;
  heartbeatTimeoutMs?: number;
  /** Most items waiting at the root: beyond it `feed` throws `QueueFullError` and `feedAsync` waits. */
  maxQueued?: number;
  /** Batching and window tuning (for experiments; the defaults adapt by themselves). */
  scheduler?: SchedulerOptions;
}

export interface SchedulerOptions {
  /** Items per feed frame at most (default 4096; 1 turns batching off, for comparison). */
  maxBatch?: number;
  /** Bytes per feed frame at most (default 1 MiB). */
  maxBatchBytes?: number;
  /** A fixed window instead of the adaptive one (for experiments). */
  fixedWindow?: number;
  /**
   * Items in flight this long after the rest of their feed chunk was sent get bytes of their own, so
   * that the chunk can go (default 1000 ms; checked at most once per this interval).
   */
  staleChunkMs?: number;
}
