// Run by worker-heap.test.ts as a process of its own (`bun test/support/heap-scenario.ts`): three Worker
// threads report their heaps as pcluster's workers do — one grows its heap in synchronous code ("hog"),
// one spins, one awaits — and the engine's side (WorkerHeaps) estimates each, as a node's engine does.
// A process of its own, because a test process that ran other files first holds memory they freed: a
// hog growing into those pages faults none of them in, and its estimate cannot grow.
//
// Prints one line of JSON: the estimates while the hog grows, and once it is free to report; or
// { error } naming what it waited for in vain.
import { HEAP_REPORT_MS, HeapField, WorkerHeaps, heapSlotsBytes } from "../../src/node/worker-heap.ts";
import { waitFor } from "./wait.ts";

const MB = 1024 * 1024;
const HOG_BYTES = 200 * MB;

const heaps = new WorkerHeaps(new SharedArrayBuffer(heapSlotsBytes(3)));
const slots = new Float64Array(heaps.buffer);
const release = new SharedArrayBuffer(4);
const workers: Worker[] = [];

async function start(index: number, kind: "hog" | "spin" | "sleep"): Promise<void> {
  const worker = new Worker(new URL("../fixtures/workers/heap-worker.ts", import.meta.url).href);
  workers.push(worker);
  const messages: string[] = [];
  worker.onmessage = (event: MessageEvent<string>) => void messages.push(event.data);
  worker.postMessage({ heap: heaps.buffer, index, kind, release, hogBytes: HOG_BYTES });
  await waitFor(() => messages.includes("started"), { what: `the ${kind} worker to start`, timeoutMs: 10_000 });
}

const estimates = () => [0, 1, 2].map((index) => heaps.estimate(index));
try {
  await Promise.all([start(0, "hog"), start(1, "spin"), start(2, "sleep")]);
  // The hog's own reports stop once it runs synchronously; its estimate keeps growing all the same.
  await waitFor(() => heaps.estimate(0) >= HOG_BYTES * 0.75, {
    what: "the hog's estimate to grow",
    timeoutMs: 30_000,
    everyMs: 20,
    show: () => `estimates ${estimates().join(", ")}`,
  });
  const growing = { estimates: estimates(), hogReported: slots[HeapField.Used]! };
  Atomics.store(new Int32Array(release), 0, 1);
  // Free again, each reports its own heap.
  await waitFor(() => slots[HeapField.Used]! >= HOG_BYTES, {
    what: "the hog to report",
    timeoutMs: 30_000 + HEAP_REPORT_MS,
    everyMs: 20,
    show: () => `the hog reported ${slots[HeapField.Used]} bytes`,
  });
  console.log(JSON.stringify({ hogBytes: HOG_BYTES, growing, free: { estimates: estimates() } }));
} catch (error) {
  console.log(JSON.stringify({ error: (error as Error).message }));
} finally {
  Atomics.store(new Int32Array(release), 0, 1);
  for (const worker of workers) worker.terminate();
  process.exit(0);
}
