import type { RecentError } from "../metrics/recent-errors.ts";
import type { Progress } from "./root.ts";

/** What a root shows of itself to its dashboard and its /metrics (see `Root.observe`). */
export interface RootObservation {
  /** Counts since setup: fed, done, outputs, errors, resent; queued and in flight now. */
  progress: Progress;
  /** Each node the pipeline runs on, as the root's scheduler sees it. */
  nodes: Array<{
    address: string;
    workers: number;
    /** Idle workers the node reported last. */
    idleWorkers: number;
    /** Items the node may have in flight now (its adaptive window). */
    window: number;
    inFlight: number;
    inFlightBytes: number;
    /** The last timed item's time from sent to done, and the fastest seen (null before the first). */
    roundTripMs: number | null;
    minRoundTripMs: number | null;
  }>;
  /** The last task errors, newest first. */
  errors: RecentError[];
}
