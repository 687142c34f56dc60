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

/**
 * The documents in two halves of about equal size (the largest first, each to the lighter half): the
 * split that lets two threads finish together, used by the floor of the bench (`wordCountHalvesInFreshThreads`).
 */
export function documentHalves(docs: readonly string[]): [string[], string[]] {
  const halves: [string[], string[]] = [[], []];
  const sizes = [0, 0];
  for (const doc of [...docs].sort((a, b) => b.length - a.length)) {
    const lighter = sizes[0]! <= sizes[1]! ? 0 : 1;
    halves[lighter].push(doc);
    sizes[lighter] += doc.length;
  }
  return halves;
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
      if (done.length < runs) return thread.postMessage("all" satisfies LoopPart);
      resolve(done);
      thread.terminate();
    };
    thread.onerror = (event) => {
      reject(new Error(`the loop's thread failed: ${event.message}`));
      thread.terminate();
    };
  });
}

/** What a loop's thread is told to count: every document, or one of `documentHalves`. */
export type LoopPart = "all" | 0 | 1;

/** The floor of any two-thread word count: the two halves' loops, side by side in two fresh threads. */
export interface HalvesRun {
  /** The later of the two loops' times: no version on two threads can finish before both halves are counted. */
  seconds: number;
  /** Each half's loop time. */
  halves: [number, number];
  /** CPU of the whole process meanwhile (both threads, their JIT and collectors). */
  cpuSeconds: number;
  /** The two halves' totals, merged. */
  totals: Totals;
}

/**
 * Two fresh Worker threads (as cold as the loop's, and as a setup's pcluster workers), each the loop
 * over one of `documentHalves`, told to start at once when both have read their documents. Their
 * merge is left out, and so is any shipping of a half's totals: what this times is a floor that a
 * cluster on two cores, whatever its design, cannot go below.
 *
 * They run in a process of their own (wordcount-floor.ts), as pcluster's workers run in their node's:
 * in the bench's process, whose heap holds the root's memory and every case's totals, the same two
 * threads took up to 40% longer.
 */
export async function wordCountHalvesInFreshProcess(): Promise<HalvesRun> {
  const child = Bun.spawn([process.execPath, new URL("./wordcount-floor.ts", import.meta.url).pathname], {
    stdout: "pipe",
    stderr: "pipe",
  });
  const [out, err, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ]);
  if (code !== 0) throw new Error(`the floor's process failed (exit ${code}):\n${err.slice(-2000)}`);
  return JSON.parse(out) as HalvesRun;
}

/** The two halves' loops, side by side in two fresh Worker threads of this process. */
export async function wordCountHalvesInFreshThreads(): Promise<HalvesRun> {
  const threads = [0, 1].map(() => new Worker(new URL("./wordcount-loop-worker.ts", import.meta.url)));
  try {
    const runs = threads.map((thread, part) => {
      let started: () => void = () => {};
      const ready = new Promise<void>((resolve) => (started = resolve));
      const done = new Promise<LoopRun>((resolve, reject) => {
        thread.onmessage = (event: MessageEvent<"ready" | LoopRun>) => {
          if (event.data === "ready") started();
          else resolve(event.data);
        };
        thread.onerror = (event) => reject(new Error(`half ${part}'s thread failed: ${event.message}`));
      });
      return { ready, done };
    });
    await Promise.all(runs.map((run) => run.ready));
    const cpuBefore = process.cpuUsage();
    for (const [part, thread] of threads.entries()) thread.postMessage(part as LoopPart);
    const [first, second] = (await Promise.all(runs.map((run) => run.done))) as [LoopRun, LoopRun];
    const cpu = process.cpuUsage(cpuBefore);
    const totals = new Map(Object.entries(first.totals)); // a Map: "constructor" is a word too
    for (const [word, count] of Object.entries(second.totals)) totals.set(word, (totals.get(word) ?? 0) + count);
    return {
      seconds: Math.max(first.seconds, second.seconds),
      halves: [first.seconds, second.seconds],
      cpuSeconds: (cpu.user + cpu.system) / 1e6,
      totals: Object.fromEntries(totals),
    };
  } finally {
    for (const thread of threads) thread.terminate();
  }
}
