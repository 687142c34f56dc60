/**
 * The node engine against its baselines, all measured in this run on this machine:
 *   - identity and a 3-stage chain (with a 2-way generator) on items { id, payload: 64 chars }, with 2
 *     workers: pcluster's engine, piscina 5 (2 threads, its high-throughput configurations), and a plain
 *     in-process loop (the ceiling);
 *   - 400 CPU-bound items of 10 ms: wall time against the ideal 2-worker time;
 *   - the raw ring: small records one way between two threads;
 *   - async I/O-bound items (a 20 ms wait each) at concurrency 50 per worker, against a single-process
 *     promise pool with as many places (2 × 50), on the same items in the same run.
 * The engine is measured the way a root sees it: items encoded on the calling thread, outputs decoded
 * there too (and, in a row of its own, as a node runs it: bytes in, bytes out). The engine and piscina
 * are measured alike: each case starts its threads and runs a first pass (fresh threads: JIT
 * compilation included) and WARMUP more items; then RUNS rounds each time one pass of every case in
 * turn, so that all of them meet the same moments of a noisy machine. A case's median over the rounds is
 * its steady state (what a node serving a pipeline runs at), and every ratio is taken within a round.
 *
 *   bun run bench engine      env: BENCH_ITEMS (200000), BENCH_RUNS (5), BENCH_WARMUP (50000)
 */
import { join } from "node:path";
import Piscina from "piscina";
import { Engine } from "../src/node/engine/engine.ts";
import { ByteRing } from "../src/node/ring.ts";
import { RecordBatchBuilder, decode, encode } from "../src/protocol/codec.ts";
import { DONE_ENTRY_BYTES, RecordKind, RecordReader } from "../src/protocol/record.ts";
import type { TaskSpec } from "../src/protocol/pipeline.ts";
import { aim } from "./support/aim.ts";
import { type Item, chain, identity, makeItems, wait20 } from "./support/tasks/index.ts";

const WORKERS = 2;
const ITEMS = Number(process.env.BENCH_ITEMS ?? 200_000);
const RUNS = Number(process.env.BENCH_RUNS ?? 5);
/** Items run untimed after the first pass, before the timed ones, on the same threads. */
const WARMUP = Number(process.env.BENCH_WARMUP ?? 50_000);
const TASKS_MODULE = join(import.meta.dir, "support/tasks/index.ts");
const PISCINA_MODULE = join(import.meta.dir, "support/piscina-task.ts");

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

async function repeat(runs: number, once: () => Promise<number>): Promise<number> {
  const rates: number[] = [];
  for (let i = 0; i < runs; i++) rates.push(await once());
  return median(rates);
}

// ---- pcluster engine ----------------------------------------------------------------------------

/**
 * A case kept running across the rounds: its first pass on fresh threads (JIT compilation included) is
 * `cold`; after that and WARMUP more items, `pass` runs `count` items and gives items/s.
 */
interface Runner {
  label: string;
  /** Items per timed pass. */
  count: number;
  cold: number;
  pass(count: number): Promise<number>;
  close(): Promise<void>;
}

/**
 * The engine as a runner. `callerCodec` (the default): inputs are encoded and outputs decoded on this
 * thread, inside the timing, as a program using the engine directly would. Without it, inputs are
 * encoded beforehand and outputs counted as bytes: the engine as a node runs it, the root encoding and
 * decoding elsewhere.
 */
async function engineRunner(
  label: string,
  tasks: Array<Pick<TaskSpec, "export" | "isGenerator">>,
  items: Item[],
  outputsPerItem: number,
  callerCodec = true,
): Promise<Runner> {
  let outputs = 0;
  let checksum = 0;
  const engine = await Engine.start(
    tasks.map((task) => ({ package: "bench", ...task })),
    { bench: TASKS_MODULE },
    { workers: WORKERS },
    {
      onResults(batch) {
        const records = batch.records(); // read in place: the engine clears the batch afterwards
        const reader = new RecordReader(records);
        while (reader.next()) {
          if (reader.kind !== RecordKind.Output) continue;
          outputs++;
          if (callerCodec) checksum += (decode(records, reader.payloadStart, reader.payloadEnd) as { id: number }).id;
          else checksum += reader.payloadEnd - reader.payloadStart;
        }
      },
    },
  );
  const encoded = callerCodec ? undefined : items.map((item) => encode(item));
  const pass = async (count: number): Promise<number> => {
    outputs = 0;
    checksum = 0;
    const started = performance.now();
    const batch = new RecordBatchBuilder(128 * 1024);
    for (let i = 0; i < count; i++) {
      if (encoded === undefined) batch.appendValue(RecordKind.Input, 0, 0, i, items[i]);
      else batch.append(RecordKind.Input, 0, 0, i, encoded[i]!);
      if (batch.count === 1000) engine.dispatch(batch.takeRecords());
    }
    if (batch.count > 0) engine.dispatch(batch.takeRecords());
    await engine.whenEmpty();
    const seconds = (performance.now() - started) / 1000;
    if (outputs !== count * outputsPerItem)
      throw new Error(`engine gave ${outputs} outputs, expected ${count * outputsPerItem}`);
    if (checksum <= 0 && count > 1) throw new Error("engine outputs look wrong");
    return count / seconds;
  };
  try {
    await Bun.sleep(50); // the workers' start-up settles
    const cold = await pass(items.length);
    await pass(Math.min(WARMUP, items.length));
    return { label, count: items.length, cold, pass, close: () => engine.reset() };
  } catch (error) {
    await engine.reset();
    throw error;
  }
}

async function engineWall(
  tasks: Array<Pick<TaskSpec, "export" | "isGenerator">>,
  items: unknown[],
  concurrency = 1,
): Promise<number> {
  let done = 0;
  const engine = await Engine.start(
    tasks.map((task) => ({ package: "bench", ...task })),
    { bench: TASKS_MODULE },
    { workers: WORKERS, concurrency },
    {
      onResults(batch) {
        const reader = new RecordReader(batch.takeRecords());
        while (reader.next())
          if (reader.kind === RecordKind.Done) done += (reader.payloadEnd - reader.payloadStart) / DONE_ENTRY_BYTES;
      },
    },
  );
  try {
    const started = performance.now();
    const batch = new RecordBatchBuilder();
    for (const [i, item] of items.entries()) batch.append(RecordKind.Input, 0, 0, i, encode(item));
    engine.dispatch(batch.takeRecords());
    await engine.whenEmpty();
    if (done !== items.length) throw new Error(`engine finished ${done} of ${items.length}`);
    return performance.now() - started;
  } finally {
    await engine.reset();
  }
}

// ---- piscina ------------------------------------------------------------------------------------

interface PiscinaConfig {
  label: string;
  options: ConstructorParameters<typeof Piscina>[0];
  /** Tasks kept in flight by the submitter. */
  window: number;
}

const PISCINA_CONFIGS: PiscinaConfig[] = [
  { label: "piscina (defaults)", options: {}, window: 256 },
  { label: "piscina (concurrentTasksPerWorker 16)", options: { concurrentTasksPerWorker: 16 }, window: 512 },
  {
    label: "piscina (atomics disabled, 16 per worker)",
    options: { atomics: "disabled", concurrentTasksPerWorker: 16 },
    window: 512,
  },
];

/** One piscina pool as a runner, started and warmed like the engine's. */
async function piscinaRunner(config: PiscinaConfig, task: string, items: unknown[]): Promise<Runner> {
  const pool = new Piscina({ filename: PISCINA_MODULE, minThreads: WORKERS, maxThreads: WORKERS, ...config.options });
  const pass = async (count: number): Promise<number> => {
    const started = performance.now();
    let next = 0;
    let completed = 0;
    await new Promise<void>((resolve, reject) => {
      const submit = () => {
        if (next >= count) return;
        pool.run({ task, item: items[next++] }).then(() => {
          completed++;
          if (completed === count) resolve();
          else submit();
        }, reject);
      };
      for (let i = 0; i < config.window; i++) submit();
    });
    return count / ((performance.now() - started) / 1000);
  };
  try {
    await Promise.all(Array.from({ length: WORKERS }, () => pool.run({ task, item: items[0] }))); // threads up
    const cold = await pass(items.length);
    await pass(Math.min(WARMUP, items.length));
    return { label: config.label, count: items.length, cold, pass, close: () => pool.destroy() };
  } catch (error) {
    await pool.destroy();
    throw error;
  }
}

/**
 * Runs every runner's timed pass once per round, RUNS rounds, in turn within each round, so that all
 * of them meet the same moments of a noisy machine. Returns each runner's rates, round by round.
 */
async function rounds(runners: Runner[]): Promise<number[][]> {
  const rates: number[][] = runners.map(() => []);
  for (let round = 0; round < RUNS; round++) {
    for (const [i, runner] of runners.entries()) rates[i]!.push(await runner.pass(runner.count));
  }
  return rates;
}

async function piscinaBatchedRate(task: string, items: unknown[], batchSize: number): Promise<number> {
  const pool = new Piscina({ filename: PISCINA_MODULE, name: "runBatch", minThreads: WORKERS, maxThreads: WORKERS });
  try {
    const started = performance.now();
    const runs: Promise<unknown>[] = [];
    for (let i = 0; i < items.length; i += batchSize)
      runs.push(pool.run({ task, items: items.slice(i, i + batchSize) }));
    await Promise.all(runs);
    return items.length / ((performance.now() - started) / 1000);
  } finally {
    await pool.destroy();
  }
}

async function piscinaWall(items: unknown[]): Promise<number> {
  const pool = new Piscina({ filename: PISCINA_MODULE, minThreads: WORKERS, maxThreads: WORKERS });
  try {
    const started = performance.now();
    await Promise.all(items.map((item) => pool.run({ task: "spin", item })));
    return performance.now() - started;
  } finally {
    await pool.destroy();
  }
}

// ---- promise pool -------------------------------------------------------------------------------

/** Milliseconds for one process to run `fn` over `items` with at most `places` calls in flight. */
async function promisePoolWall<T>(fn: (item: T) => Promise<unknown>, items: T[], places: number): Promise<number> {
  const started = performance.now();
  let next = 0;
  const lane = async () => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: places }, lane));
  return performance.now() - started;
}

// ---- plain loop and raw ring --------------------------------------------------------------------

function loopRate(fn: (item: Item) => unknown, items: Item[]): number {
  let sink = 0;
  const started = performance.now();
  for (const item of items) {
    const out = fn(item);
    if (out !== undefined) sink++;
  }
  const seconds = (performance.now() - started) / 1000;
  if (sink === 0) throw new Error("loop did nothing");
  return items.length / seconds;
}

async function ringRate(count: number): Promise<number> {
  const buffer = ByteRing.allocate(1 << 20);
  const ring = new ByteRing(buffer);
  const worker = new Worker(join(import.meta.dir, "support/ring-producer.ts"));
  try {
    const started = performance.now();
    worker.postMessage({ buffer, count });
    let position = ring.readPosition;
    let read = 0;
    while (read < count) {
      const at = ring.peek(position);
      if (at < 0) {
        ring.release(position);
        const wait = ring.waitForData(position);
        if (wait !== undefined) await wait;
        continue;
      }
      position = (at + ring.recordSize(ring.offsetOf(at))) >>> 0;
      read++;
      if ((read & 255) === 0) ring.release(position);
    }
    ring.release(position);
    return count / ((performance.now() - started) / 1000);
  } finally {
    worker.terminate();
  }
}

// ---- run ----------------------------------------------------------------------------------------

const format = (rate: number) => `${(rate / 1000).toFixed(0).padStart(7)} k/s`;
const row = (name: string, value: string, cold = "", note = "") =>
  console.log(`${name.padEnd(52)} ${value.padStart(12)} ${cold.padStart(12)}  ${note}`);

/** Prints each runner's warm median and first pass; returns the rates by label, round by round. */
async function measureRunners(runners: Runner[], notes: Record<string, string> = {}): Promise<Map<string, number[]>> {
  try {
    const rates = await rounds(runners);
    for (const [i, runner] of runners.entries()) {
      row(`  ${runner.label}`, format(median(rates[i]!)), format(runner.cold), notes[runner.label] ?? "");
    }
    return new Map(runners.map((runner, i) => [runner.label, rates[i]!]));
  } finally {
    for (const runner of runners) await runner.close();
  }
}

/** Per round, `ours` ÷ the best of `theirs` in that round; the median and every round's ratio. */
function roundRatios(ours: number[], theirs: number[][]): { median: number; perRound: string } {
  const ratios = ours.map((rate, round) => rate / Math.max(...theirs.map((rates) => rates[round]!)));
  return { median: median(ratios), perRound: ratios.map((ratio) => `${ratio.toFixed(1)}×`).join(" ") };
}

const items = makeItems(ITEMS);
const piscinaItems = items.slice(0, Math.min(ITEMS, 60_000));
console.log(
  `engine bench: ${ITEMS} items { id, payload: 64 chars } (piscina: ${piscinaItems.length} per pass), ${WORKERS} workers.\n` +
    `Every case below runs on threads that ran a first pass ("first pass": fresh threads, JIT compilation included) and\n` +
    `${WARMUP} more items; then ${RUNS} rounds, each timing one pass of every case in turn. "warm" is the median of a case's\n` +
    "rounds (a node's steady state); ratios are taken within each round.\n",
);
row("", "warm", "first pass");

console.log("identity");
const loopIdentity = median(Array.from({ length: RUNS }, () => loopRate(identity, items)));
row("  plain in-process loop (ceiling)", format(loopIdentity));
const ENGINE = "pcluster engine";
const ENGINE_BYTES = "pcluster engine, bytes in and out (as on a node)";
const identityTask = [{ export: "identity", isGenerator: false }];
const identityRunners: Runner[] = [
  await engineRunner(ENGINE, identityTask, items, 1),
  await engineRunner(ENGINE_BYTES, identityTask, items, 1, false),
];
for (const config of PISCINA_CONFIGS) identityRunners.push(await piscinaRunner(config, "identity", piscinaItems));
const identityRates = await measureRunners(identityRunners, {
  [ENGINE_BYTES]: "encoding and decoding left to the root",
});
const piscinaIdentity = PISCINA_CONFIGS.map((config) => identityRates.get(config.label)!);
const piscinaArrays = median(await Promise.all([piscinaBatchedRate("identity", items, 1000)]));
row(
  "  piscina fed arrays of 1000 (the user batches)",
  format(piscinaArrays),
  "",
  "a different task signature; a fresh pool",
);

console.log("\n3-stage chain: enrich → duplicate (2-way generator) → measure");
const loopChain = median(Array.from({ length: RUNS }, () => loopRate(chain, items)));
row("  plain in-process loop (ceiling)", format(loopChain));
const chainTasks = [
  { export: "enrich", isGenerator: false },
  { export: "duplicate", isGenerator: true },
  { export: "measure", isGenerator: false },
];
const chainRates = await measureRunners([
  await engineRunner(ENGINE, chainTasks, items, 2),
  await piscinaRunner(PISCINA_CONFIGS[1]!, "chain", piscinaItems),
]);

console.log("\nCPU-bound: 400 items × 10 ms on 2 workers (ideal 2000 ms)");
const spinItems = Array.from({ length: 400 }, () => ({ ms: 10 }));
const engineSpin = median(await Promise.all([engineWall([{ export: "spin", isGenerator: false }], spinItems)]));
row("  pcluster engine", `${engineSpin.toFixed(0)} ms`, "", `${((2000 / engineSpin) * 100).toFixed(1)}% of ideal`);
const piscinaSpin = await piscinaWall(spinItems);
row("  piscina (defaults)", `${piscinaSpin.toFixed(0)} ms`, "", `${((2000 / piscinaSpin) * 100).toFixed(1)}% of ideal`);

console.log("\nraw ring: 16-byte records, one way, worker → main thread");
const ring = await repeat(RUNS, () => ringRate(5_000_000));
row("  ByteRing", format(ring));

const ASYNC_ITEMS = 2000;
const CONCURRENCY = 50;
const idealAsyncMs = (ASYNC_ITEMS / (WORKERS * CONCURRENCY)) * 20;
console.log(
  `\nasync I/O-bound: ${ASYNC_ITEMS} items × a 20 ms wait, ${WORKERS} workers × concurrency ${CONCURRENCY} ` +
    `(ideal ${idealAsyncMs.toFixed(0)} ms, ${((WORKERS * CONCURRENCY) / 0.02).toFixed(0)} items/s)`,
);
const asyncItems = Array.from({ length: ASYNC_ITEMS }, (_, id) => id);
const asyncRounds = Array.from({ length: RUNS }, () => ({ engine: 0, pool: 0 }));
const waitTask = [{ export: "wait20", isGenerator: false }];
await engineWall(waitTask, asyncItems.slice(0, 200), CONCURRENCY); // threads and JIT warm
for (const round of asyncRounds) {
  round.engine = await engineWall(waitTask, asyncItems, CONCURRENCY);
  round.pool = await promisePoolWall(wait20, asyncItems, WORKERS * CONCURRENCY);
}
const asyncEngineMs = median(asyncRounds.map((round) => round.engine));
const asyncPoolMs = median(asyncRounds.map((round) => round.pool));
const asyncRate = (ms: number) => format((ASYNC_ITEMS / ms) * 1000);
const ofIdeal = (ms: number) => `${((idealAsyncMs / ms) * 100).toFixed(1)}% of ideal`;
row("  pcluster engine, concurrency 50", asyncRate(asyncEngineMs), "", ofIdeal(asyncEngineMs));
row("  one process, a pool of 100 promises", asyncRate(asyncPoolMs), "", ofIdeal(asyncPoolMs));
const asyncRatio = median(asyncRounds.map((round) => round.pool / round.engine));

const efficiency = 2000 / engineSpin;
const identityRatio = roundRatios(identityRates.get(ENGINE)!, piscinaIdentity);
const bytesRatio = roundRatios(identityRates.get(ENGINE_BYTES)!, piscinaIdentity);
const chainRatio = roundRatios(chainRates.get(ENGINE)!, [chainRates.get(PISCINA_CONFIGS[1]!.label)!]);
console.log("\nratios, per round against the best piscina configuration of that round");
console.log(
  `  identity, engine ÷ piscina:                      ${identityRatio.median.toFixed(1)}×  (rounds: ${identityRatio.perRound})`,
);
console.log(
  `  identity, engine bytes in and out ÷ piscina:     ${bytesRatio.median.toFixed(1)}×  (rounds: ${bytesRatio.perRound})`,
);
console.log(
  `  3-stage chain, engine ÷ piscina (16 per worker): ${chainRatio.median.toFixed(1)}×  (rounds: ${chainRatio.perRound})`,
);
console.log(`  async 20 ms at concurrency 50, engine ÷ promise pool: ${asyncRatio.toFixed(2)}×  (same items)`);
console.log("\naims");
aim("engine ÷ piscina's best per-item configuration on identity (warm)", identityRatio.median, 10, {
  format: (v) => `${v.toFixed(1)}×`,
});
const coldBest = Math.max(
  ...PISCINA_CONFIGS.map((config) => identityRunners.find((runner) => runner.label === config.label)!.cold),
);
console.log(`    (first passes on fresh threads: ${(identityRunners[0]!.cold / coldBest).toFixed(1)}×)`);
aim("CPU-bound, of the ideal 2-worker speedup", efficiency, 0.95, { format: (v) => `${(v * 100).toFixed(1)}%` });
const asyncEfficiency = idealAsyncMs / asyncEngineMs;
aim("async 20 ms tasks at concurrency 50, of the ideal", asyncEfficiency, 0.8, {
  format: (v) => `${(v * 100).toFixed(1)}%`,
});
aim("async 20 ms tasks at concurrency 50, of the promise pool's rate (within 2×)", asyncRatio, 0.5, {
  format: (v) => `${v.toFixed(2)}×`,
});
aim("raw ring, small records one way", ring, 5e6, { format: (v) => `${(v / 1e6).toFixed(1)} M/s` });
