import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { REPO } from "../support/processes.ts";
import { EngineHarness } from "../support/engine.ts";
import type { Job } from "../fixtures/concurrent/index.ts";

// Real worker threads running the typed fixture package's async tasks, several items at once.
const TASKS = join(REPO, "test/fixtures/concurrent");

const byId = (a: { id: number }, b: { id: number }) => a.id - b.id;
const range = (count: number) => Array.from({ length: count }, (_, i) => i);

describe("concurrency", () => {
  test("items in progress at once, with an async fan-out: every output once, every item done once", async () => {
    const harness = await EngineHarness.start(
      TASKS,
      [{ export: "fanOutSlowly", isGenerator: true }, { export: "countAtOnce" }],
      { workers: 2, concurrency: 8 },
    );
    try {
      const jobs = range(40).map((id) => ({ id, ms: 0, count: 10 }));
      const ids = harness.feed(jobs);
      await harness.waitEmpty();
      const outputs = harness.values() as Array<{ item: { id: number; child: number }; mostAtOnce: number }>;
      const seen = outputs.map((output) => `${output.item.id}.${output.item.child}`).sort();
      expect(seen).toEqual(jobs.flatMap((job) => range(10).map((child) => `${job.id}.${child}`)).sort());
      expect([...harness.done].sort((a, b) => a - b)).toEqual(ids);
      for (const id of ids) expect(harness.outputsOf.get(id)).toBe(10);
      const most = Math.max(...outputs.map((output) => output.mostAtOnce));
      expect(most).toBeGreaterThan(1); // items did overlap on a worker
      expect(most).toBeLessThanOrEqual(8); // and never more than its concurrency
      expect(harness.errors).toEqual([]);
    } finally {
      await harness.engine.reset();
    }
  }, 60_000);

  test("a task's own concurrency, below the worker's, bounds that task's calls in progress", async () => {
    const harness = await EngineHarness.start(TASKS, [{ export: "countAtOnce", concurrency: 3 }, { export: "later" }], {
      workers: 1,
      concurrency: 20,
    });
    try {
      const ids = harness.feed(range(100));
      await harness.waitEmpty();
      const outputs = harness.values() as Array<{ item: number; mostAtOnce: number }>;
      expect(outputs.map((output) => output.item).sort((a, b) => a - b)).toEqual(range(100));
      expect([...harness.done].sort((a, b) => a - b)).toEqual(ids);
      const most = Math.max(...outputs.map((output) => output.mostAtOnce));
      expect(most).toBeGreaterThan(1);
      expect(most).toBeLessThanOrEqual(3);
    } finally {
      await harness.engine.reset();
    }
  }, 60_000);

  test("a throw, a crash and a timeout among concurrent items cost only those items", async () => {
    const harness = await EngineHarness.start(TASKS, [{ export: "act" }], {
      workers: 2,
      concurrency: 10,
      maxAttempts: 2,
      taskTimeoutMs: 1500,
    });
    try {
      const jobs: Job[] = range(300).map((id) => ({ id, ms: 5 }));
      jobs[50]!.act = "throw";
      jobs[100]!.act = "exit";
      jobs[150]!.act = "hang";
      const ids = harness.feed(jobs);
      await harness.waitEmpty(60_000);
      const poison = new Set([50, 100, 150]);
      const outputs = (harness.values() as Array<{ id: number }>).sort(byId);
      expect(outputs).toEqual(jobs.filter((job) => !poison.has(job.id)).map((job) => ({ id: job.id })));
      expect([...harness.done].sort((a, b) => a - b)).toEqual(ids);

      const thrown = harness.errors.filter((error) => error.kind === "error");
      expect(thrown.map((error) => [error.id, error.task, error.message])).toEqual([[ids[50]!, "act", "job 50 threw"]]);
      const failed = harness.errors.filter((error) => error.kind === "failed").sort(byId);
      expect(failed.map((error) => error.id)).toEqual([ids[100]!, ids[150]!]);
      const gaveUp = "gave up after 2 attempts, each of which took its worker down";
      expect(failed[0]!.message).toBe(`${gaveUp}: worker exited with code 7`);
      expect(failed[1]!.message).toBe(
        `${gaveUp}: its task got nothing done for 1500 ms, the task timeout (setup's taskTimeoutMs)`,
      );
      // Two deaths each: the items beside them counted an attempt once, then ran alone and finished.
      expect(harness.deaths.length).toBe(4);
      expect(harness.engine.retries.givenUp).toBe(2);
    } finally {
      await harness.engine.reset();
    }
  }, 90_000);

  test("an item whose Done was committed just before its worker died does not run again", async () => {
    // One worker: the exit starts (and waits a microtask), the next item finishes inside its call and
    // is due to commit (2 ms of task time); the worker commits its Done, then, before it marks the
    // input done, the exit runs.
    const harness = await EngineHarness.start(TASKS, [{ export: "commitThenExit" }], {
      workers: 1,
      concurrency: 4,
      maxAttempts: 1,
    });
    try {
      const ids = harness.feed([
        { id: 0, ms: 0, act: "exit" },
        { id: 1, ms: 2 },
        { id: 2, ms: 0 },
      ]);
      await harness.waitEmpty(60_000);
      expect(harness.deaths).toEqual(["worker exited with code 7"]);
      const outputs = (harness.values() as Array<{ id: number; run: number }>).sort(byId);
      expect(outputs.filter((output) => output.id === 1)).toEqual([{ id: 1, run: 1 }]);
      expect(outputs.map((output) => output.id)).toEqual([1, 2]);
      expect(harness.done.filter((id) => id === ids[1])).toHaveLength(1);
    } finally {
      await harness.engine.reset();
    }
  }, 60_000);

  test("sleep with 50 items per worker suspended: they finish, nothing starts until wakeup, then all do", async () => {
    const harness = await EngineHarness.start(TASKS, [{ export: "act" }], { workers: 2, concurrency: 50 });
    try {
      const jobs: Job[] = range(400).map((id) => ({ id, ms: 300 }));
      const ids = harness.feed(jobs);
      // Wait until each worker has 50 items suspended in their wait (none can finish before 300 ms).
      const engine = harness.engine;
      for (const deadline = Date.now() + 20_000; engine.itemsRunning < 100; await Bun.sleep(5)) {
        if (Date.now() > deadline) throw new Error("the workers never had 50 items each in progress");
      }
      await engine.sleep();
      const doneAsleep = harness.done.length;
      expect(doneAsleep).toBeGreaterThanOrEqual(100); // the items in progress finished before it paused
      expect(doneAsleep).toBeLessThan(jobs.length);
      await Bun.sleep(700); // longer than two items take: any item started while asleep would be done
      expect(harness.done.length).toBe(doneAsleep);
      engine.wakeup();
      await harness.waitEmpty(60_000);
      expect((harness.values() as Array<{ id: number }>).sort(byId)).toEqual(jobs.map((job) => ({ id: job.id })));
      expect([...harness.done].sort((a, b) => a - b)).toEqual(ids);
    } finally {
      await harness.engine.reset();
    }
  }, 90_000);
});

describe("retries", () => {
  const retried = (harness: EngineHarness) => harness.engine.stats()[0]!.retries ?? 0;

  test("a call failing twice then succeeding gives its output once, after backoffs, not holding its worker", async () => {
    const backoffMs = 500;
    const harness = await EngineHarness.start(TASKS, [{ export: "flaky", retry: { attempts: 3, backoffMs } }], {
      workers: 1, // concurrency 1 too: the retried item is parked, the next input runs meanwhile
    });
    try {
      const [slow] = harness.feed([{ id: 1, failures: 2 }]);
      for (const deadline = Date.now() + 20_000; retried(harness) < 1; await Bun.sleep(5)) {
        if (Date.now() > deadline) throw new Error("the first call never failed");
      }
      const [quick] = harness.feed([{ id: 2, failures: 0 }]);
      await harness.waitEmpty();
      // The item fed after the failure finished first: the one waiting for its retry held nothing.
      expect(harness.outputs.map((output) => output.id)).toEqual([quick!, slow!]);
      const [, again] = harness.values() as Array<{ id: number; calls: number[] }>;
      expect(again!.id).toBe(1);
      expect(again!.calls).toHaveLength(3);
      const gaps = again!.calls.slice(1).map((time, i) => time - again!.calls[i]!);
      console.log(`retry gaps: ${gaps.join(", ")} ms (backoff ${backoffMs} ms, doubled per attempt)`);
      expect(gaps[0]!).toBeGreaterThanOrEqual(backoffMs);
      expect(gaps[1]!).toBeGreaterThanOrEqual(backoffMs * 2);
      expect([...harness.done].sort((a, b) => a - b)).toEqual([slow!, quick!]);
      expect(harness.errors).toEqual([]);
      const [stats] = harness.engine.stats();
      expect([stats!.processed, stats!.errors, stats!.retries]).toEqual([2, 0, 2]);
    } finally {
      await harness.engine.reset();
    }
  }, 60_000);

  test("after the last attempt the item is dropped and reported with the attempts made; `when` limits what is retried", async () => {
    const retry = { attempts: 3, backoffMs: 10, when: ["ECONNRESET", "TypeError"] };
    const harness = await EngineHarness.start(TASKS, [{ export: "flaky", retry }], { workers: 2, concurrency: 4 });
    try {
      const ids = harness.feed([
        { id: 1, failures: 5 }, // retried twice, then given up
        { id: 2, failures: 1, code: "EACCES" }, // not a listed code: not retried
        { id: 3, failures: 1, code: "plain" }, // a plain Error: not listed either
        { id: 4, failures: 2 }, // succeeds on its last attempt
      ]);
      await harness.waitEmpty();
      expect(harness.values()).toEqual([{ id: 4, calls: expect.any(Array) }]);
      const errors = harness.errors
        .map((error) => [error.id, error.kind, error.message])
        .sort((a, b) => (a[0] as number) - (b[0] as number));
      expect(errors).toEqual([
        [ids[0]!, "error", "item 1 failed (call 3) (after 3 attempts)"],
        [ids[1]!, "error", "item 2 failed (call 1)"],
        [ids[2]!, "error", "item 3 failed (call 1)"],
      ]);
      const [stats] = harness.engine.stats();
      expect([stats!.processed, stats!.errors, stats!.retries]).toEqual([1, 3, 4]);
    } finally {
      await harness.engine.reset();
    }
  }, 60_000);
});
