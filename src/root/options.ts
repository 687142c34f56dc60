import type { CombineFor } from "./chain-types.ts";
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
  /**
   * How long the root keeps trying to reach a node it lost while a pipeline runs, to set it up again
   * and give it work (default 60 s; 0 turns rejoining off). A `Root.local` cluster restarts its own
   * nodes, so there the root waits this long for one to come back before every node counts as lost.
   */
  rejoinTimeoutMs?: number;
  /**
   * Largest item or output, encoded, in bytes (default 1 GiB; `setup` may set its own). Each node's
   * own limit (`--max-item`) is told at setup, and the smallest holds: a larger item is refused at
   * `feed` with `ItemTooLargeError`, a larger output is a `TaskError` for its item. Items larger than a
   * frame travel split across frames.
   */
  maxItemBytes?: number;
  /** Most items waiting at the root: beyond it `feed` throws `QueueFullError` and `feedAsync` waits. */
  maxQueued?: number;
  /**
   * Most bytes of items (encoded) waiting at the root. `run()` and `process()` read their input only
   * while the queue holds less (default: 64 MiB, or twice the bytes the nodes may have in flight, the
   * larger), so items of megabytes are not read into memory far ahead of the nodes. Set, it bounds
   * `feed` too (it throws `QueueFullError` once the queue holds that many bytes) and `feedAsync` (it
   * waits for room). One item larger than the bound still goes, alone.
   */
  maxQueuedBytes?: number;
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
  /** Milliseconds for the stale-chunk checks (default `performance.now()`; a test may drive it by hand). */
  clock?: () => number;
}

/**
 * An `AbortSignal`, written out so that pcluster's declarations need neither the DOM's nor Node's
 * types (pass a real one: `new AbortController().signal`, `AbortSignal.timeout(ms)`).
 */
export interface AbortSignalLike {
  readonly aborted: boolean;
  readonly reason: unknown;
  addEventListener(type: "abort", listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: "abort", listener: () => void): void;
}

/** Where and how often to show progress; `true` means all defaults. */
export interface ProgressOptions {
  /** Where to draw (default `process.stderr`). A TTY gets a bar redrawn in place, anything else plain lines. */
  stream?: { write(text: string): unknown; isTTY?: boolean; columns?: number };
  /** Milliseconds between plain lines when the stream is not a TTY (default 2000). */
  intervalMs?: number;
  /** What is counted, shown first (default "items"). */
  label?: string;
}

/**
 * setup's `combine`: a built-in by name (`"sum-by-key"`: outputs `{ [key]: number }` summed per key;
 * `"count"`), or a combiner class exported by one of `localPackages` — with `add(output)`,
 * `merge(other)` and `result()` — built once per worker, and once on the root, with `args`.
 * (`CombineFor<Out>` is the same, checked against a chain giving `Out`.)
 */
export type CombineOption = CombineFor<unknown>;

/** Options of `run()` and `process()`. */
export interface RunOptions {
  /** Aborting it stops reading the items (see `run` and `process` for what happens to those already fed). */
  signal?: AbortSignalLike;
  /** Show a progress bar on stderr (a TTY), or a line every 2 s (anything else). */
  progress?: boolean | ProgressOptions;
}
