/** A taskchain entry's run options (`concurrency`, `retry`), checked on the root before anything is sent. */
import { MAX_CONCURRENCY, type RetryPolicy, type TaskSpec } from "../protocol/pipeline.ts";

/** What a task entry may say about how it runs, beside its function. */
export interface TaskRunOptions {
  /** Items of this task one worker has in progress at once (default: setup's `concurrency`). */
  concurrency?: number;
  /**
   * A call that throws is run again, after `backoffMs` doubled per attempt (with jitter), up to
   * `attempts` calls in all, while other items go on; `when` limits it to errors of those class names
   * or `code`s. After the last attempt the item is dropped and reported (default: no retry).
   */
  retry?: RetryPolicy;
}

const isPositiveInteger = (value: unknown): boolean => Number.isInteger(value) && (value as number) > 0;

/** Throws a `TypeError` unless `value` is a concurrency a worker can have (1 to MAX_CONCURRENCY). */
export function checkConcurrency(value: unknown, what: string): void {
  if (!isPositiveInteger(value) || (value as number) > MAX_CONCURRENCY) {
    throw new TypeError(`${what} must be an integer from 1 to ${MAX_CONCURRENCY}, got ${Bun.inspect(value)}`);
  }
}

/** Copies the entry's run options into `spec`; throws a `TypeError` naming the one that is wrong. */
export function applyTaskRunOptions(spec: TaskSpec, task: TaskRunOptions, where: string): void {
  if (task.concurrency !== undefined) {
    checkConcurrency(task.concurrency, `${where}: concurrency`);
    spec.concurrency = task.concurrency;
  }
  const retry = task.retry;
  if (retry === undefined) return;
  if (retry === null || typeof retry !== "object") {
    throw new TypeError(`${where}: retry must be { attempts, backoffMs, when? }, got ${Bun.inspect(retry)}`);
  }
  if (!isPositiveInteger(retry.attempts)) {
    const got = Bun.inspect(retry.attempts);
    throw new TypeError(`${where}: retry.attempts must be a positive integer (calls in all), got ${got}`);
  }
  if (typeof retry.backoffMs !== "number" || !(retry.backoffMs >= 0) || !Number.isFinite(retry.backoffMs)) {
    const got = Bun.inspect(retry.backoffMs);
    throw new TypeError(`${where}: retry.backoffMs must be a finite number of milliseconds, at least 0, got ${got}`);
  }
  const when = retry.when;
  if (when !== undefined && !(Array.isArray(when) && when.every((name) => typeof name === "string"))) {
    const got = Bun.inspect(when);
    throw new TypeError(`${where}: retry.when must be a list of error class names or codes (strings), got ${got}`);
  }
  spec.retry = { attempts: retry.attempts, backoffMs: retry.backoffMs };
  if (when !== undefined) spec.retry.when = [...when];
}
