import { describe, expect, test } from "bun:test";
import type { RetryPolicy } from "../../src/protocol/pipeline.ts";
import { RunningItems } from "../../src/node/running-items.ts";
import { InProgressItems } from "../../src/node/worker/in-progress.ts";
import type { ItemRun } from "../../src/node/worker/item-run.ts";
import { isRetryable, retryDelayMs } from "../../src/node/worker/retry.ts";

/** The parts of an ItemRun that InProgressItems reads and writes. */
const item = (position: number, alone = false) =>
  ({ position, alone, place: -1, finished: false, committed: false }) as unknown as ItemRun;

function items(limit: number, maxParked = 4) {
  const table = new RunningItems(RunningItems.allocate(limit));
  let sleeping = false;
  const inProgress = new InProgressItems(limit, maxParked, table, () => sleeping);
  return { inProgress, table, sleep: (value: boolean) => (sleeping = value) };
}

describe("InProgressItems", () => {
  test("holds at most `limit` places; the shared table knows every item holding one", () => {
    const { inProgress, table } = items(2);
    const [a, b, c] = [item(0), item(10), item(20)];
    inProgress.start(a);
    inProgress.start(b);
    expect(inProgress.hasRoom).toBe(false);
    expect(table.positions().sort((x, y) => x - y)).toEqual([0, 10]);
    inProgress.finish(a);
    expect(inProgress.hasRoom).toBe(true);
    inProgress.start(c);
    expect(table.positions().sort((x, y) => x - y)).toEqual([10, 20]);
    expect(table.count).toBe(2);
  });

  test("input is released up to the oldest item not committed, whatever order they finish in", () => {
    const { inProgress } = items(3);
    const [a, b, c] = [item(0), item(10), item(20)];
    for (const run of [a, b, c]) inProgress.start(run);
    inProgress.finish(c);
    inProgress.finish(b);
    for (const run of inProgress.takeFinished()) run.committed = true;
    expect(inProgress.releasePoint(30)).toBe(0); // a is not done: nothing goes back
    inProgress.finish(a);
    expect(inProgress.releasePoint(30)).toBe(0); // done, but its Done is not committed yet
    for (const run of inProgress.takeFinished()) run.committed = true;
    expect(inProgress.releasePoint(30)).toBe(30);
    expect(inProgress.isEmpty).toBe(true);
  });

  test("a parked item gives its place up, and gets one back before new input; not while asleep", async () => {
    const { inProgress, table, sleep } = items(1);
    const [a, b] = [item(0), item(10)];
    inProgress.start(a);
    inProgress.park(a);
    expect(table.count).toBe(0);
    expect(inProgress.hasRoom).toBe(true);
    inProgress.start(b);
    let resumed = false;
    const resuming = inProgress.resume(a);
    expect(resuming).toBeInstanceOf(Promise);
    void (resuming as Promise<void>).then(() => (resumed = true));
    expect(inProgress.hasRoom).toBe(false); // the resuming item comes first
    sleep(true);
    inProgress.finish(b);
    await Bun.sleep(0);
    expect(resumed).toBe(false); // asleep: no item takes a place
    sleep(false);
    inProgress.wake();
    await Bun.sleep(0);
    expect(resumed).toBe(true);
    expect(table.positions()).toEqual([0]);
  });

  test("parked items are bounded: past `maxParked` no new input starts", () => {
    const { inProgress } = items(4, 2);
    const runs = [item(0), item(10)];
    for (const run of runs) {
      inProgress.start(run);
      inProgress.park(run);
    }
    expect(inProgress.active).toBe(0);
    expect(inProgress.hasRoom).toBe(false);
  });

  test("an item that runs alone holds every place, and goes first when it comes back from a backoff", async () => {
    const { inProgress } = items(2);
    const [lone, other, late, last] = [item(0, true), item(10), item(20), item(30)];
    inProgress.start(other);
    inProgress.park(other);
    inProgress.start(lone);
    expect(inProgress.hasRoom).toBe(false); // one of two places taken, but it runs alone
    inProgress.park(lone);
    inProgress.start(late);
    inProgress.start(last);
    const order: string[] = [];
    void (inProgress.resume(other) as Promise<void>).then(() => order.push("other")); // no place free
    void (inProgress.resume(lone) as Promise<void>).then(() => order.push("lone")); // ahead of it
    inProgress.finish(late);
    await Bun.sleep(0);
    expect(order).toEqual([]); // `last` still runs: the lone item waits for both places
    inProgress.finish(last);
    await Bun.sleep(0);
    expect(order).toEqual(["lone"]);
    inProgress.finish(lone);
    await Bun.sleep(0);
    expect(order).toEqual(["lone", "other"]);
  });
});

describe("retry policy", () => {
  class Transient extends Error {
    override name = "Transient";
    code = "ECONNRESET";
  }
  const policy = (when?: string[]): RetryPolicy => ({ attempts: 3, backoffMs: 100, ...(when ? { when } : {}) });

  test("retries any error without `when`; with it, those named by class or code", () => {
    expect(isRetryable(new Error("x"), policy())).toBe(true);
    expect(isRetryable("a string", policy())).toBe(true);
    expect(isRetryable(new Transient(), policy(["ECONNRESET"]))).toBe(true);
    expect(isRetryable(new Transient(), policy(["Transient"]))).toBe(true);
    expect(isRetryable(new TypeError("x"), policy(["TypeError"]))).toBe(true);
    expect(isRetryable(new Error("x"), policy(["ECONNRESET", "TypeError"]))).toBe(false);
    expect(isRetryable("a string", policy(["ECONNRESET"]))).toBe(false);
  });

  test("the backoff doubles per attempt, with up to half again of jitter, never below backoffMs", () => {
    for (let i = 0; i < 200; i++) {
      for (const [attempt, base] of [
        [1, 100],
        [2, 200],
        [3, 400],
      ] as const) {
        const delay = retryDelayMs(policy(), attempt);
        expect(delay).toBeGreaterThanOrEqual(base);
        expect(delay).toBeLessThan(base * 1.5);
      }
    }
    expect(retryDelayMs({ attempts: 100, backoffMs: 1000 }, 40)).toBeLessThan(90_000); // capped
  });
});
