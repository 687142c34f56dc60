/**
 * The node engine against its baselines, all measured in this run on this machine:
 *   - identity and a 3-stage chain (with a 2-way generator) on items { id, payload: 64 chars }, with 2
 *     workers: pcluster's engine, piscina 5 (2 threads, its high-throughput configurations), and a plain
 *     in-process loop (the ceiling);
 *   - 400 CPU-bound items of 10 ms: wall time against the ideal 2-worker time;
 *   - the raw ring: small records one way between two threads.
 * The engine is measured the way a root sees it: items encoded on the calling thread, outputs decoded
 * there too. Each figure is the median of a few runs.
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
 * Items/s through the engine. `callerCodec` (the default): inputs are encoded and outputs decoded on
 * this thread, inside the timing, as a program using the engine directly would. Without it, inputs are
 * encoded beforehand and outputs counted as bytes: the engine as a node runs it, the root encoding and
 * decoding on its own machine.
 */
async function engineRate(
  tasks: Array<Pick<TaskSpec, "export" | "isGenerator">>,
  items: Item[],
  expectedOutputs: number,
  callerCodec = true,
): Promise<number> {
  let outputs = 0;
  let checksum = 0;
  const engine = await Engine.start(
    tasks.map((task) => ({ package: "bench", ...task })),
    { bench: TASKS_MODULE },
    { workers: WORKERS },
    {
      onResults(batch) {
        const records = batch.takeRecords();
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
  try {
    await Bun.sleep(50); // let the workers' JIT settle on nothing in particular
    const encoded = callerCodec ? undefined : items.map((item) => encode(item));
    const started = performance.now();
    const batch = new RecordBatchBuilder(128 * 1024);
    for (let i = 0; i < items.length; i++) {
      batch.append(RecordKind.Input, 0, 0, i, encoded === undefined ? encode(items[i]) : encoded[i]!);
      if (batch.count === 1000) engine.dispatch(batch.takeRecords());
    }
    if (batch.count > 0) engine.dispatch(batch.takeRecords());
    await engine.whenEmpty();
    const seconds = (performance.now() - started) / 1000;
    if (outputs !== expectedOutputs) throw new Error(`engine gave ${outputs} outputs, expected ${expectedOutputs}`);
    if (checksum <= 0 && items.length > 1) throw new Error("engine outputs look wrong");
    return items.length / seconds;
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

async function piscinaRate(config: PiscinaConfig, task: string, items: unknown[]): Promise<number> {
  const pool = new Piscina({ filename: PISCINA_MODULE, minThreads: WORKERS, maxThreads: WORKERS, ...config.options });
  try {
    await Promise.all(Array.from({ length: 64 }, (_, i) => pool.run({ task, item: items[i] }))); // warm up
    const started = performance.now();
    let next = 0;
    let completed = 0;
    await new Promise<void>((resolve, reject) => {
      const submit = () => {
        if (next >= items.length) return;
        pool.run({ task, item: items[next++] }).then(() => {
          completed++;
          if (completed === items.length) resolve();
          else submit();
        }, reject);
      };
      for (let i = 0; i < config.window; i++) submit();
    });
    return items.length / ((performance.now() - started) / 1000);
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
const rows: Array<[string, string, string]> = [];
const row = (name: string, value: string, note = "") => {
  rows.push([name, value, note]);
  console.log(`${name.padEnd(52)} ${value.padStart(12)}  ${note}`);
};

const items = makeItems(ITEMS);
console.log(`engine bench: ${ITEMS} items { id, payload: 64 chars }, ${WORKERS} workers, median of ${RUNS} runs\n`);

console.log("identity");
const loopIdentity = median(Array.from({ length: RUNS }, () => loopRate(identity, items)));
row("  plain in-process loop (ceiling)", format(loopIdentity));
const engineIdentity = await repeat(RUNS, () => engineRate([{ export: "identity", isGenerator: false }], items, ITEMS));
row("  pcluster engine", format(engineIdentity), `${((engineIdentity / loopIdentity) * 100).toFixed(1)}% of the loop`);
const engineBytes = await repeat(RUNS, () => engineRate([{ export: "identity", isGenerator: false }], items, ITEMS, false));
row("  pcluster engine, bytes in and out (as on a node)", format(engineBytes), "encoding and decoding left to the root");
let piscinaBest = 0;
let piscinaBestLabel = "";
const piscinaItems = items.slice(0, Math.min(ITEMS, 60_000));
for (const config of PISCINA_CONFIGS) {
  const rate = await repeat(RUNS, () => piscinaRate(config, "identity", piscinaItems));
  row(`  ${config.label}`, format(rate));
  if (rate > piscinaBest) {
    piscinaBest = rate;
    piscinaBestLabel = config.label;
  }
}
const piscinaArrays = await repeat(RUNS, () => piscinaBatchedRate("identity", items, 1000));
row("  piscina fed arrays of 1000 (the user batches)", format(piscinaArrays), "a different task signature");

console.log("\n3-stage chain: enrich → duplicate (2-way generator) → measure");
const loopChain = median(Array.from({ length: RUNS }, () => loopRate(chain, items)));
row("  plain in-process loop (ceiling)", format(loopChain));
const engineChain = await repeat(RUNS, () =>
  engineRate(
    [
      { export: "enrich", isGenerator: false },
      { export: "duplicate", isGenerator: true },
      { export: "measure", isGenerator: false },
    ],
    items,
    ITEMS * 2,
  ),
);
row("  pcluster engine", format(engineChain), `${((engineChain / loopChain) * 100).toFixed(1)}% of the loop`);
const piscinaChain = await repeat(RUNS, () => piscinaRate(PISCINA_CONFIGS[1]!, "chain", piscinaItems));
row(`  ${PISCINA_CONFIGS[1]!.label}`, format(piscinaChain));

console.log("\nCPU-bound: 400 items × 10 ms on 2 workers (ideal 2000 ms)");
const spinItems = Array.from({ length: 400 }, () => ({ ms: 10 }));
const engineSpin = median(await Promise.all([engineWall([{ export: "spin", isGenerator: false }], spinItems)]));
row("  pcluster engine", `${engineSpin.toFixed(0)} ms`, `${((2000 / engineSpin) * 100).toFixed(1)}% of ideal`);
const piscinaSpin = await piscinaWall(spinItems);
row("  piscina (defaults)", `${piscinaSpin.toFixed(0)} ms`, `${((2000 / piscinaSpin) * 100).toFixed(1)}% of ideal`);

console.log("\nraw ring: 16-byte records, one way, worker → main thread");
const ring = await repeat(RUNS, () => ringRate(5_000_000));
row("  ByteRing", format(ring));

const speedup = engineIdentity / piscinaBest;
const efficiency = 2000 / engineSpin;
console.log("\naims");
console.log(`  engine ≥ 10× piscina's best per-item configuration on identity: ${speedup.toFixed(1)}× (${piscinaBestLabel}) — ${speedup >= 10 ? "met" : "NOT met"}`);
console.log(`    (as a node runs it, bytes in and out: ${(engineBytes / piscinaBest).toFixed(1)}× piscina's best)`);
console.log(`  CPU-bound ≥ 95% of the ideal 2-worker speedup: ${(efficiency * 100).toFixed(1)}% — ${efficiency >= 0.95 ? "met" : "NOT met"}`);
console.log(`  raw ring ≥ 5 M small records/s one way: ${(ring / 1e6).toFixed(1)} M/s — ${ring >= 5e6 ? "met" : "NOT met"}`);
