/**
 * The node engine against its baselines, all measured in this run on this machine:
 *   - identity and a 3-stage chain (with a 2-way generator) on items { id, payload: 64 chars }, with 2
 *     workers: pcluster's engine, piscina 5 (2 threads, its high-throughput configurations), and a plain
 *     in-process loop (the ceiling);
 *   - 400 CPU-bound items of 10 ms: wall time against the ideal 2-worker time;
 *   - the raw ring: small records one way between two threads.
 * The engine is measured the way a root sees it: items encoded on the calling thread, outputs decoded
 * there too. The engine and piscina are measured alike: on one set of threads, a first pass (fresh
 * threads: JIT compilation included), WARMUP more items, then the median of RUNS timed passes — the
 * steady state a node serving a pipeline runs at, and the figure the aims are judged by.
 */
import { join } from "node:path";
import Piscina from "piscina";
import { Engine } from "../src/node/engine.ts";
import { ByteRing } from "../src/node/ring.ts";
import { RecordBatchBuilder, RecordKind, RecordReader, decode, encode } from "../src/protocol/codec.ts";
import type { TaskSpec } from "../src/protocol/pipeline.ts";
import { type Item, chain, identity, makeItems } from "./support/tasks/index.ts";

const WORKERS = 2;
const ITEMS = Number(process.env.BENCH_ITEMS ?? 200_000);
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
/** Items run untimed after the first pass, before the timed ones, on the same threads. */
const WARMUP = Number(process.env.BENCH_WARMUP ?? 50_000);
const TASKS_MODULE = join(import.meta.dir, "support/tasks/index.ts");
const PISCINA_MODULE = join(import.meta.dir, "support/piscina-task.ts");

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

/** A case's rate on fresh threads (its first pass) and warm (the median of the passes after warm-up). */
interface Rates {
  cold: number;
  warm: number;
}

async function repeat(runs: number, once: () => Promise<number>): Promise<number> {
  const rates: number[] = [];
  for (let i = 0; i < runs; i++) rates.push(await once());
  return median(rates);
}

// ---- pcluster engine ----------------------------------------------------------------------------

/**
 * Items/s through one engine: the first pass on fresh workers (JIT compilation included), then WARMUP
 * items, then RUNS timed passes (their median is the steady state, what a node serving a pipeline runs
 * at). `callerCodec` (the default): inputs are encoded and outputs decoded on this thread, inside the
 * timing, as a program using the engine directly would. Without it, inputs are encoded beforehand and
 * outputs counted as bytes: the engine as a node runs it, the root encoding and decoding elsewhere.
 */
async function engineRates(
  tasks: Array<Pick<TaskSpec, "export" | "isGenerator">>,
  items: Item[],
  outputsPerItem: number,
  callerCodec = true,
): Promise<Rates> {
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
    if (outputs !== count * outputsPerItem) throw new Error(`engine gave ${outputs} outputs, expected ${count * outputsPerItem}`);
    if (checksum <= 0 && count > 1) throw new Error("engine outputs look wrong");
    return count / seconds;
  };
  try {
    await Bun.sleep(50); // the workers' start-up settles
    const cold = await pass(items.length);
    await pass(Math.min(WARMUP, items.length));
    return { cold, warm: await repeat(RUNS, () => pass(items.length)) };
  } finally {
    await engine.reset();
  }
}

async function engineWall(tasks: Array<Pick<TaskSpec, "export" | "isGenerator">>, items: unknown[]): Promise<number> {
  let done = 0;
  const engine = await Engine.start(
    tasks.map((task) => ({ package: "bench", ...task })),
    { bench: TASKS_MODULE },
    { workers: WORKERS },
    {
      onResults(batch) {
        const reader = new RecordReader(batch.takeRecords());
        while (reader.next()) if (reader.kind === RecordKind.Done) done += (reader.payloadEnd - reader.payloadStart) / 4;
      },
    },
  );
  try {
    const started = performance.now();
    const batch = new RecordBatchBuilder();
    items.forEach((item, i) => batch.append(RecordKind.Input, 0, 0, i, encode(item)));
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
  { label: "piscina (atomics disabled, 16 per worker)", options: { atomics: "disabled", concurrentTasksPerWorker: 16 }, window: 512 },
];

/** Items/s through one piscina pool, measured like the engine: first pass, WARMUP items, RUNS timed passes. */
async function piscinaRates(config: PiscinaConfig, task: string, items: unknown[]): Promise<Rates> {
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
    return { cold, warm: await repeat(RUNS, () => pass(items.length)) };
  } finally {
    await pool.destroy();
  }
}

async function piscinaBatchedRate(task: string, items: unknown[], batchSize: number): Promise<number> {
  const pool = new Piscina({ filename: PISCINA_MODULE, name: "runBatch", minThreads: WORKERS, maxThreads: WORKERS });
  try {
    const started = performance.now();
    const runs: Promise<unknown>[] = [];
    for (let i = 0; i < items.length; i += batchSize) runs.push(pool.run({ task, items: items.slice(i, i + batchSize) }));
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
const rates = (name: string, rates: Rates, note = "") => row(name, format(rates.warm), format(rates.cold), note);

const items = makeItems(ITEMS);
console.log(
  `engine bench: ${ITEMS} items { id, payload: 64 chars }, ${WORKERS} workers. "warm": the median of ${RUNS} passes on threads ` +
    `that ran a first pass and ${WARMUP} more items (a node's steady state); "first pass": fresh threads, JIT compilation included.\n`,
);
row("", "warm", "first pass");

console.log("identity");
const loopIdentity = median(Array.from({ length: RUNS }, () => loopRate(identity, items)));
row("  plain in-process loop (ceiling)", format(loopIdentity));
const engineIdentity = await engineRates([{ export: "identity", isGenerator: false }], items, 1);
rates("  pcluster engine", engineIdentity, `${((engineIdentity.warm / loopIdentity) * 100).toFixed(1)}% of the loop`);
const engineBytes = await engineRates([{ export: "identity", isGenerator: false }], items, 1, false);
rates("  pcluster engine, bytes in and out (as on a node)", engineBytes, "encoding and decoding left to the root");
let piscinaBest: Rates = { cold: 0, warm: 0 };
let piscinaBestLabel = "";
const piscinaItems = items.slice(0, Math.min(ITEMS, 60_000));
for (const config of PISCINA_CONFIGS) {
  const measured = await piscinaRates(config, "identity", piscinaItems);
  rates(`  ${config.label}`, measured);
  if (measured.warm > piscinaBest.warm) {
    piscinaBest = measured;
    piscinaBestLabel = config.label;
  }
}
const piscinaArrays = await repeat(RUNS, () => piscinaBatchedRate("identity", items, 1000));
row("  piscina fed arrays of 1000 (the user batches)", format(piscinaArrays), "", "a different task signature; fresh pool each run");

console.log("\n3-stage chain: enrich → duplicate (2-way generator) → measure");
const loopChain = median(Array.from({ length: RUNS }, () => loopRate(chain, items)));
row("  plain in-process loop (ceiling)", format(loopChain));
const engineChain = await engineRates(
  [
    { export: "enrich", isGenerator: false },
    { export: "duplicate", isGenerator: true },
    { export: "measure", isGenerator: false },
  ],
  items,
  2,
);
rates("  pcluster engine", engineChain, `${((engineChain.warm / loopChain) * 100).toFixed(1)}% of the loop`);
const piscinaChain = await piscinaRates(PISCINA_CONFIGS[1]!, "chain", piscinaItems);
rates(`  ${PISCINA_CONFIGS[1]!.label}`, piscinaChain);

console.log("\nCPU-bound: 400 items × 10 ms on 2 workers (ideal 2000 ms)");
const spinItems = Array.from({ length: 400 }, () => ({ ms: 10 }));
const engineSpin = median(await Promise.all([engineWall([{ export: "spin", isGenerator: false }], spinItems)]));
row("  pcluster engine", `${engineSpin.toFixed(0)} ms`, "", `${((2000 / engineSpin) * 100).toFixed(1)}% of ideal`);
const piscinaSpin = await piscinaWall(spinItems);
row("  piscina (defaults)", `${piscinaSpin.toFixed(0)} ms`, "", `${((2000 / piscinaSpin) * 100).toFixed(1)}% of ideal`);

console.log("\nraw ring: 16-byte records, one way, worker → main thread");
const ring = await repeat(RUNS, () => ringRate(5_000_000));
row("  ByteRing", format(ring));

const speedup = engineIdentity.warm / piscinaBest.warm;
const efficiency = 2000 / engineSpin;
console.log("\naims");
console.log(`  engine ≥ 10× piscina's best per-item configuration on identity: ${speedup.toFixed(1)}× warm (${piscinaBestLabel}) — ${speedup >= 10 ? "met" : "NOT met"}`);
console.log(`    first pass on fresh threads: ${(engineIdentity.cold / piscinaBest.cold).toFixed(1)}×; bytes in and out, as a node runs it: ${(engineBytes.warm / piscinaBest.warm).toFixed(1)}× warm`);
console.log(`  CPU-bound ≥ 95% of the ideal 2-worker speedup: ${(efficiency * 100).toFixed(1)}% — ${efficiency >= 0.95 ? "met" : "NOT met"}`);
console.log(`  raw ring ≥ 5 M small records/s one way: ${(ring / 1e6).toFixed(1)} M/s — ${ring >= 5e6 ? "met" : "NOT met"}`);
