/** A task entry's retry policy at work in a worker: which failures to retry, and how long to wait first. */
import type { RetryPolicy } from "../../protocol/pipeline.ts";

/** No single backoff waits longer than this, however many attempts (unless `backoffMs` itself is longer). */
const MAX_BACKOFF_MS = 60_000;

/**
 * Whether `error` is worth another call: any error when the policy names none, else one whose class
 * name (its `name`, or its constructor's) or `code` the policy lists. Names travel as strings: the
 * policy is written on the root and shipped.
 */
export function isRetryable(error: unknown, policy: RetryPolicy): boolean {
  const when = policy.when;
  if (when === undefined || when.length === 0) return true;
  if (error === null || typeof error !== "object") return false;
  const { name, code } = error as { name?: unknown; code?: unknown };
  const constructorName = (error as object).constructor?.name;
  const codeName = code === undefined ? undefined : String(code);
  return when.some((wanted) => wanted === name || wanted === constructorName || wanted === codeName);
}

/**
 * The wait before attempt `attempt + 1`: `backoffMs` doubled per attempt made, plus up to half of it
 * again at random, so that items failing together (a service down for a moment) do not come back
 * together. Never below `backoffMs`.
 */
export function retryDelayMs(policy: RetryPolicy, attempt: number): number {
  const base = Math.min(policy.backoffMs * 2 ** (attempt - 1), Math.max(policy.backoffMs, MAX_BACKOFF_MS));
  return base * (1 + Math.random() / 2);
}
