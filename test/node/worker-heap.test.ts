import { afterEach, expect, test } from "bun:test";
import {
  HEAP_FIELDS,
  HEAP_REPORT_MS,
  HeapField,
  HeapReporter,
  WorkerHeaps,
  heapSlotsBytes,
} from "../../src/node/worker-heap.ts";
import { waitFor } from "../support/wait.ts";

/**
 * The memory guard's measure of each worker, with real Bun worker threads: a worker that grows its heap
 * in synchronous code (and so cannot report) is seen growing through its thread's page faults; workers
 * that spin or await beside it are seen small. Once free to report, each reports its own heap only.
 */

const MB = 1024 * 1024;
const HOG_BYTES = 200 * MB;
const running: Worker[] = [];

afterEach(() => {
  for (const worker of running.splice(0)) worker.terminate();
});

function start(
  heaps: WorkerHeaps,
  index: number,
  kind: "hog" | "spin" | "sleep",
  release: SharedArrayBuffer,
): Promise<string> {
  const worker = new Worker(new URL("../fixtures/workers/heap-worker.ts", import.meta.url).href);
  running.push(worker);
  const messages: string[] = [];
  worker.onmessage = (event: MessageEvent<string>) => void messages.push(event.data);
  worker.postMessage({ heap: heaps.buffer, index, kind, release, hogBytes: HOG_BYTES });
  return waitUntil(() => messages.includes("started"), 10_000, `the ${kind} worker to start`).then(() => kind);
}

/** Waits (bounded, generously: a loaded machine starves threads) until `condition` holds. */
function waitUntil(condition: () => boolean, timeoutMs: number, what: string): Promise<boolean> {
  return waitFor(condition, { what, timeoutMs, everyMs: 20 });
}

test("a worker growing its heap in synchronous code is seen growing; the ones beside it are seen small", async () => {
  const heaps = new WorkerHeaps(new SharedArrayBuffer(heapSlotsBytes(3)));
  const release = new SharedArrayBuffer(4);
  await Promise.all([
    start(heaps, 0, "hog", release),
    start(heaps, 1, "spin", release),
    start(heaps, 2, "sleep", release),
  ]);
  const slots = new Float64Array(heaps.buffer);
  try {
    // The hog's own reports stop once it runs synchronously; its estimate keeps growing all the same.
    await waitUntil(() => heaps.estimate(0) >= HOG_BYTES * 0.75, 30_000, "the hog's estimate to grow");
    expect(slots[HeapField.Used]!).toBeLessThan(32 * MB);
    expect(heaps.estimate(1)).toBeLessThan(32 * MB);
    expect(heaps.estimate(2)).toBeLessThan(32 * MB);
  } finally {
    Atomics.store(new Int32Array(release), 0, 1);
  }
  // Free again, each reports its own heap: the hog's is its 200 MB, the others' are theirs.
  await waitUntil(() => slots[HeapField.Used]! >= HOG_BYTES, 30_000 + HEAP_REPORT_MS, "the hog to report");
  expect(heaps.estimate(0)).toBeGreaterThanOrEqual(HOG_BYTES);
  expect(heaps.estimate(1)).toBeLessThan(32 * MB);
  expect(heaps.estimate(2)).toBeLessThan(32 * MB);
  heaps.clear(0);
  expect(slots[HeapField.Used]).toBe(0);
}, 60_000);

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
