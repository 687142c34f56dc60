import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { Root, type TaskError } from "../../src/index.ts";
import * as concurrent from "../fixtures/concurrent/index.ts";
import { REPO, killAll } from "../support/processes.ts";

// Real node processes: async tasks with `concurrency`, and task retries, through the public API.
const TASKS = join(REPO, "test/fixtures/concurrent");
const roots: Root[] = [];

afterAll(async () => {
  await Promise.all(roots.map((root) => root.close()));
  await killAll();
}, 20_000);

test("2 nodes × 2 workers at concurrency 50 run 2000 async 20 ms items: every output once", async () => {
  const cluster = await Root.local({ nodes: 2, workers: 2 });
  roots.push(cluster);
  const seen = new Map<number, number>();
  await cluster.setup("io-bound", "1", [{ function: concurrent.sleepEcho }], {
    localPackages: [TASKS],
    concurrency: 50,
    outputHandler: (output: number) => void seen.set(output, (seen.get(output) ?? 0) + 1),
  });
  const items = Array.from({ length: 2000 }, (_, i) => i);
  const started = performance.now();
  await cluster.run(items);
  const seconds = (performance.now() - started) / 1000;
  // A rate for the log, not an assertion: one worker at a time would do 4 × 50 = 200 items/s.
  console.log(`2000 items of 20 ms at concurrency 50 on 2 × 2 workers: ${Math.round(2000 / seconds)} items/s`);
  expect(seen.size).toBe(2000);
  for (const item of items) expect(seen.get(item)).toBe(1);
  const [stats] = await cluster.stats();
  expect(stats!.processed).toBe(2000);
}, 120_000);

test("setup checks concurrency and retry options, naming the wrong one", async () => {
  const cluster = new Root([["127.0.0.1", 1]]);
  roots.push(cluster);
  const setup = (options: object, entry: object = {}) =>
    cluster.setup("bad", "1", [{ function: concurrent.flaky, ...entry }], { localPackages: [TASKS], ...options });
  await expect(setup({ concurrency: 0 })).rejects.toThrow(
    "setup option concurrency must be an integer from 1 to 10000, got 0",
  );
  await expect(setup({}, { concurrency: 1.5 })).rejects.toThrow(
    'task 1 ("concurrent#flaky"): concurrency must be an integer from 1 to 10000, got 1.5',
  );
  await expect(setup({}, { retry: { attempts: 0, backoffMs: 10 } })).rejects.toThrow(
    "retry.attempts must be a positive integer",
  );
  await expect(setup({}, { retry: { attempts: 2, backoffMs: -1 } })).rejects.toThrow(
    "retry.backoffMs must be a finite number",
  );
  await expect(setup({}, { retry: { attempts: 2, backoffMs: 1, when: [Error] } })).rejects.toThrow(
    "retry.when must be a list of error class names or codes (strings)",
  );
});

test("a task's retries through the cluster: counted in stats, the last failure reported with its attempts", async () => {
  const cluster = await Root.local({ nodes: 1, workers: 1 });
  roots.push(cluster);
  const outputs: Array<{ id: number; calls: number[] }> = [];
  const errors: TaskError[] = [];
  await cluster.setup(
    "flaky",
    "1",
    [{ function: concurrent.flaky, retry: { attempts: 3, backoffMs: 50, when: ["TransientError"] } }],
    {
      localPackages: [TASKS],
      outputHandler: (output) => void outputs.push(output),
      errorHandler: (error) => void errors.push(error),
    },
  );
  await cluster.run([
    { id: 1, failures: 2 },
    { id: 2, failures: 3 },
  ]);
  expect(outputs.map((output) => [output.id, output.calls.length])).toEqual([[1, 3]]);
  expect(errors.map((error) => error.task)).toEqual(["flaky"]);
  expect(errors[0]!.message).toEndWith(": item 2 failed (call 3) (after 3 attempts)");
  const [stats] = await cluster.stats();
  expect([stats!.processed, stats!.errors, stats!.retries]).toEqual([1, 1, 4]);
}, 60_000);

test("exactly once: an item finished just before its worker died is handed out once, not again after a rerun", async () => {
  const cluster = await Root.local({ nodes: 1, workers: 1 });
  roots.push(cluster);
  const outputs: Array<{ id: number; run: number }> = [];
  const errors: TaskError[] = [];
  await cluster.setup("done-then-death", "1", [{ function: concurrent.commitThenExit }], {
    localPackages: [TASKS],
    concurrency: 4,
    maxAttempts: 1,
    outputHandler: (output: { id: number; run: number }) => void outputs.push(output),
    errorHandler: (error) => void errors.push(error),
  });
  // The worker commits item 1's Done, then item 0 ends it before it marks item 1's input done.
  cluster.feed({ id: 0, ms: 0, act: "exit" }, { id: 1, ms: 2 }, { id: 2, ms: 0 });
  await cluster.waitEmpty();
  expect(outputs.sort((a, b) => a.id - b.id)).toEqual([
    { id: 1, run: 1 },
    { id: 2, run: 1 },
  ]);
  expect(errors).toHaveLength(1);
  expect(errors[0]!.failed).toBe(true);
  expect(errors[0]!.message).toContain('(input: { id: 0, ms: 0, act: "exit", })');
  expect(errors[0]!.message).toEndWith(
    "gave up after 1 attempts, each of which took its worker down: worker exited with code 7",
  );
}, 60_000);
