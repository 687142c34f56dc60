import { afterEach, expect, test } from "bun:test";
import { HEAP_FIELDS, HeapField, HeapReporter, WorkerHeaps, heapSlotsBytes } from "../../src/node/worker-heap.ts";
import { killAll, spawnBun } from "../support/processes.ts";
import { waitFor } from "../support/wait.ts";

/**
 * The memory guard's measure of each worker, with real Bun worker threads: a worker that grows its heap
 * in synchronous code (and so cannot report) is seen growing through its thread's page faults; workers
 * that spin or await beside it are seen small. Once free to report, each reports its own heap only.
 */

const MB = 1024 * 1024;
const running: Worker[] = [];

afterEach(async () => {
  for (const worker of running.splice(0)) worker.terminate();
  await killAll();
});

/** Waits (bounded, generously: a loaded machine starves threads) until `condition` holds. */
function waitUntil(condition: () => boolean, timeoutMs: number, what: string): Promise<boolean> {
  return waitFor(condition, { what, timeoutMs, everyMs: 20 });
}

test("a worker growing its heap in synchronous code is seen growing; the ones beside it are seen small", async () => {
  // In a process of its own (see heap-scenario.ts): this one may hold memory freed by the files before.
  const scenario = spawnBun(["test/support/heap-scenario.ts"]);
  const result = JSON.parse((await scenario.stdoutText(90_000)).trim() || "{}") as {
    error?: string;
    hogBytes: number;
    growing: { estimates: number[]; hogReported: number };
    free: { estimates: number[] };
  };
  expect(result.error).toBeUndefined();
  const { hogBytes, growing, free } = result;
  // While it grows, its reports stop (it runs synchronously), yet its estimate has grown.
  expect(growing.estimates[0]!).toBeGreaterThanOrEqual(hogBytes * 0.75);
  expect(growing.hogReported).toBeLessThan(32 * MB);
  expect(growing.estimates[1]!).toBeLessThan(32 * MB);
  expect(growing.estimates[2]!).toBeLessThan(32 * MB);
  // Free again, each reports its own heap: the hog's is its 200 MB, the others' are theirs.
  expect(free.estimates[0]!).toBeGreaterThanOrEqual(hogBytes);
  expect(free.estimates[1]!).toBeLessThan(32 * MB);
  expect(free.estimates[2]!).toBeLessThan(32 * MB);
}, 120_000);

test("a worker's reports are forgotten for its replacement", () => {
  const buffer = new SharedArrayBuffer(heapSlotsBytes(2));
  const heaps = new WorkerHeaps(buffer);
  const reporter = new HeapReporter(buffer, 0);
  reporter.write(5 * MB, Number.NaN);
  expect(heaps.estimate(0)).toBe(5 * MB);
  heaps.clear(0);
  expect(new Float64Array(buffer)[HeapField.Used]).toBe(0);
  expect(heaps.estimate(0)).toBe(0);
});

test("a worker that waits for input reports once more, then not until it has work again", async () => {
  const buffer = new SharedArrayBuffer(heapSlotsBytes(2));
  const slots = new Float64Array(buffer);
  const reporter = new HeapReporter(buffer, 1);
  const used = HEAP_FIELDS + HeapField.Used; // worker 1's slot
  reporter.start();
  try {
    expect(slots[used]).toBeGreaterThan(0); // reported at once
    expect(reporter.reporting).toBe(true);
    slots[used] = -1;
    reporter.idle();
    await waitUntil(() => !reporter.reporting, 10_000, "the reports to stop");
    expect(slots[used]).toBeGreaterThan(0); // the last report came before they stopped
    reporter.busy();
    expect(reporter.reporting).toBe(true);
    slots[used] = -1;
    await waitUntil(() => slots[used]! > 0, 10_000, "a report once busy again");
    expect(slots[0]).toBe(0); // another worker's slot is never written
  } finally {
    reporter.idle();
    await waitUntil(() => !reporter.reporting, 10_000, "the reports to stop at the end");
  }
});

test("a report read while its worker writes the next is never half of each", async () => {
  // A torn read — the new heap with the old fault count — counts the pages the new heap holds twice:
  // enough, near --memory-limit, to end a healthy worker.
  const huge = 1e12;
  const heaps = new WorkerHeaps(new SharedArrayBuffer(heapSlotsBytes(2)));
  const stop = new Int32Array(new SharedArrayBuffer(8));
  const writer = new Worker(new URL("../support/heap-writer.ts", import.meta.url).href);
  running.push(writer);
  const finished = new Promise<number>((resolve) => (writer.onmessage = (event) => resolve(event.data)));
  writer.postMessage({ heap: heaps.buffer, index: 1, stop: stop.buffer, huge });
  await waitUntil(() => Atomics.load(stop, 1) > 1000, 10_000, "the writer to run");
  let reads = 0;
  let highest = 0;
  for (const until = performance.now() + 500; performance.now() < until; reads++) {
    const estimate = heaps.estimate(1);
    if (estimate > highest) highest = estimate;
  }
  Atomics.store(stop, 0, 1);
  const rounds = await finished;
  expect(rounds).toBeGreaterThan(1000);
  expect(reads).toBeGreaterThan(100);
  expect(highest).toBeLessThanOrEqual(huge);
}, 30_000);
