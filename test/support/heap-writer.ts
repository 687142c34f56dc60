// A worker thread that writes heap reports into its slot as fast as it can, alternating two reports that
// are each consistent — nothing used and no faults; a huge heap with more faults than it will ever have —
// until told to stop (see worker-heap.test.ts). A reader that mixes the two sees a heap past the huge
// one (`huge`). `stop`: [0] is set to stop it; [1] counts its rounds so far.
import { HeapReporter } from "../../src/node/worker-heap.ts";

interface Start {
  heap: SharedArrayBuffer;
  index: number;
  stop: SharedArrayBuffer;
  huge: number;
}

const port = globalThis as unknown as {
  onmessage: ((event: MessageEvent<Start>) => void) | null;
  postMessage(message: unknown): void;
};

port.onmessage = (event) => {
  const reporter = new HeapReporter(event.data.heap, event.data.index);
  const stop = new Int32Array(event.data.stop);
  let rounds = 0;
  while (Atomics.load(stop, 0) === 0) {
    reporter.write(0, 0);
    reporter.write(event.data.huge, 1e15);
    Atomics.store(stop, 1, ++rounds);
  }
  port.postMessage(rounds);
};
