/**
 * The word count as a plain single-thread loop, folding as it goes: the reference of
 * bench/wordcount.bench.ts (every other total must equal it), timed in a thread of its own
 * (wordcount-loop-worker.ts): the bench's own thread holds the root's memory and every case's totals,
 * and its collector made the loop there 0–50% slower than in a fresh thread.
 */
import { countWords, lines } from "./wordcount/index.ts";

export type Totals = Record<string, number>;

export function wordCountLoop(docs: readonly string[]): Totals {
  const totals = new Map<string, number>();
  for (const doc of docs) {
    for (const line of lines(doc)) {
      const counts = countWords(line);
      for (const word in counts) totals.set(word, (totals.get(word) ?? 0) + counts[word]!);
    }
  }
  return Object.fromEntries(totals);
}

/** What the loop's thread reports: the loop's own time (not the thread's start), and its totals. */
export interface LoopRun {
  seconds: number;
  /** CPU of the whole process meanwhile: the loop's thread, and the JIT compiling for it. */
  cpuSeconds: number;
  totals: Totals;
}

/**
 * Runs the loop `runs` times in a new Worker thread (fresh JIT, fresh heap, like a script of its own):
 * the first run is as cold as a pcluster worker started by `setup`, the next ones are warm. The thread
 * reads its documents before the first clock starts, so neither its start nor a copy of 20 MB is timed.
 */
export function wordCountLoopInFreshThread(runs: number): Promise<LoopRun[]> {
  const thread = new Worker(new URL("./wordcount-loop-worker.ts", import.meta.url));
  const done: LoopRun[] = [];
  return new Promise<LoopRun[]>((resolve, reject) => {
    thread.onmessage = (event: MessageEvent<"ready" | LoopRun>) => {
      if (event.data !== "ready") done.push(event.data);
      if (done.length < runs) return thread.postMessage("go");
      resolve(done);
      thread.terminate();
    };
    thread.onerror = (event) => {
      reject(new Error(`the loop's thread failed: ${event.message}`));
      thread.terminate();
    };
  });
}
