/**
 * Cluster bench: items/s of an identity task end to end — `Root.local` → node processes over loopback
 * TCP → worker threads → back — beside, from the same run:
 *   - the engine alone (src/node/engine/engine.ts in this process, 2 workers), driven as bench/engine.bench.ts
 *     drives it: items encoded on this thread straight into the batch, dispatched 1000 at a time,
 *     outputs decoded on this thread where they lie (the aim is judged against this one); and the same
 *     with each item encoded to bytes of its own first, as the root must for its ledger;
 *   - a plain in-process loop calling the same function, bare (the ceiling), and with the codec work the
 *     cluster does per item (encode the item, decode it, call, encode the output, decode it);
 *   - batching: the same 1-node root with `scheduler: { maxBatch: 1 }` (a feed frame per item);
 *   - delivery: the 1-node root (exactly-once, the default) beside one set up with
 *     `delivery: "at-least-once"` (outputs streamed, not held for their Done);
 *   - CPU-bound: 10 ms busy-loop items on 2 nodes × 1 worker (2 workers on 2 cores), wall time against
 *     the ideal items × 10 ms / 2, beside the engine alone with 2 workers on the same items.
 *
 * What a root run includes: `feed()` (encoding every item on the root, in chunks of 1000, all queued at
 * once), scheduling, TCP both ways, the node's engine, decoding every output on the root and handing it
 * to an output handler that counts it; timed from the first feed to `waitEmpty()`.
 *
 * The machine is shared and noisy, so every cluster stays up for the whole bench and the cases run in
 * rounds, one after another in a rotating order; each ratio is taken within a round and the report gives
 * the median of those ratios (and of the rates). The first round is a warm-up and is not counted.
 *
 *   bun run bench cluster
 *   env: PCLUSTER_BENCH_CLUSTER_ITEMS (200000), PCLUSTER_BENCH_ROUNDS (6), PCLUSTER_BENCH_SPIN_ITEMS (200)
 */
import { join } from "node:path";
import { loadavg } from "node:os";
import { Engine } from "../src/node/engine/engine.ts";
import { RecordBatchBuilder, decode, encode } from "../src/protocol/codec.ts";
import { DONE_ENTRY_BYTES, RecordKind, RecordReader } from "../src/protocol/record.ts";
import { Root } from "../src/root/root.ts";
import { aim } from "./support/aim.ts";
import { fmtRange, fmtRate, fmtRatio, median, pct, table } from "./support/report.ts";
import { type Item, identity, makeItems, spin } from "./support/tasks/index.ts";

const ITEMS = Number(process.env.PCLUSTER_BENCH_CLUSTER_ITEMS ?? 200_000);
const ROUNDS = Number(process.env.PCLUSTER_BENCH_ROUNDS ?? 6);
const SPIN_ITEMS = Number(process.env.PCLUSTER_BENCH_SPIN_ITEMS ?? 200);
const SPIN_MS = 10;
const SPIN_RUNS = 3;
const FEED_CHUNK = 1000;
/** The task package shipped to the nodes (the engine imports its entry module directly). */
const TASKS_PACKAGE = join(import.meta.dir, "support/tasks");
const TASKS_MODULE = join(TASKS_PACKAGE, "index.ts");
const AIM_OF_ENGINE = 0.5;
const AIM_ITEMS_PER_S = 300_000;
const AIM_CPU_OF_IDEAL = 0.9;
const AIM_EXACTLY_ONCE = 0.9;

// ---- the loops --------------------------------------------------------------------------------------

function loopRate(items: Item[]): number {
  let sink = 0;
  const started = performance.now();
  for (const item of items) if (identity(item) !== undefined) sink++;
  const seconds = (performance.now() - started) / 1000;
  if (sink !== items.length) throw new Error("the loop lost items");
  return items.length / seconds;
}

function loopCodecRate(items: Item[]): number {
  let sink = 0;
  const started = performance.now();
  for (const item of items) {
    const input = encode(item);
    const output = encode(identity(decode(input) as Item));
    sink += (decode(output) as Item).id >= 0 ? 1 : 0;
  }
  const seconds = (performance.now() - started) / 1000;
  if (sink !== items.length) throw new Error("the codec loop lost items");
  return items.length / seconds;
}

// ---- the engine alone -------------------------------------------------------------------------------

/** An engine with 2 workers running one task, kept for every round; outputs decoded as the root does. */
class EngineCase {
  #outputs = 0;
  #done = 0;

  private constructor(
    readonly engine: Engine,
    readonly ownedBytes: boolean,
  ) {}

  /**
   * `ownedBytes`: each item is encoded to bytes of its own and then copied into the batch, as the root
   * must (its ledger keeps every item's bytes until the item is done); otherwise items are encoded
   * straight into the batch, the fastest way to feed an engine in-process.
   */
  static async start(task: "identity" | "spin", workers: number, ownedBytes = false): Promise<EngineCase> {
    let self: EngineCase | undefined;
    const engine = await Engine.start(
      [{ package: "bench", export: task, isGenerator: false }],
      { bench: TASKS_MODULE },
      { workers },
      {
        onResults(batch) {
          const records = batch.records(); // read in place: the engine clears the batch afterwards
          const reader = new RecordReader(records);
          while (reader.next()) {
            if (reader.kind === RecordKind.Output) {
              decode(records, reader.payloadStart, reader.payloadEnd);
              self!.#outputs++;
            } else if (reader.kind === RecordKind.Done)
              self!.#done += (reader.payloadEnd - reader.payloadStart) / DONE_ENTRY_BYTES;
          }
        },
      },
    );
    self = new EngineCase(engine, ownedBytes);
    return self;
  }

  /** Feeds every item (encoded here, 1000 per dispatch) and resolves with the seconds until all are done. */
  async run(items: readonly unknown[]): Promise<number> {
    this.#outputs = 0;
    this.#done = 0;
    const started = performance.now();
    const batch = new RecordBatchBuilder(128 * 1024);
    for (let i = 0; i < items.length; i++) {
      if (this.ownedBytes) batch.append(RecordKind.Input, 0, 0, i, encode(items[i]));
      else batch.appendValue(RecordKind.Input, 0, 0, i, items[i]);
      if (batch.count === FEED_CHUNK) this.engine.dispatch(batch.takeRecords());
    }
    if (batch.count > 0) this.engine.dispatch(batch.takeRecords());
    await this.engine.whenEmpty();
    const seconds = (performance.now() - started) / 1000;
    if (this.#outputs !== items.length || this.#done !== items.length) {
      throw new Error(`engine: ${this.#outputs} outputs and ${this.#done} done of ${items.length} items`);
    }
    return seconds;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.engine.reset();
  }
}

// ---- roots --------------------------------------------------------------------------------------------

/** A `Root.local` cluster set up with one task, kept for every round. */
class RootCase implements AsyncDisposable {
  outputs = 0;

  private constructor(
    readonly root: Root,
    readonly delivery: "exactly-once" | "at-least-once",
  ) {}

  static async start(
    nodes: number,
    workers: number,
    maxBatch?: number,
    delivery: "exactly-once" | "at-least-once" = "exactly-once",
  ): Promise<RootCase> {
    const root = await Root.local({ nodes, workers, scheduler: maxBatch === undefined ? undefined : { maxBatch } });
    const self = new RootCase(root, delivery);
    try {
      await self.setup(identity);
    } catch (error) {
      await root.close();
      throw error;
    }
    return self;
  }

  async setup(task: typeof identity | typeof spin): Promise<void> {
    await this.root.setup(`bench-${task.name}`, "1", [{ function: task }], {
      localPackages: [TASKS_PACKAGE],
      delivery: this.delivery,
      outputHandler: () => {
        this.outputs++;
      },
    });
  }

  /** Feeds every item (in chunks, all queued at once) and resolves with the seconds until all are done. */
  async run(items: readonly unknown[]): Promise<number> {
    this.outputs = 0;
    const started = performance.now();
    for (let i = 0; i < items.length; i += FEED_CHUNK) this.root.feed(...items.slice(i, i + FEED_CHUNK));
    await this.root.waitEmpty();
    const seconds = (performance.now() - started) / 1000;
    if (this.outputs !== items.length) throw new Error(`root: ${this.outputs} outputs of ${items.length} items`);
    return seconds;
  }

  /** Runs every item through `root.run(items)` (chunks at hand, backpressure); resolves with the seconds. */
  async runIterable(items: readonly unknown[]): Promise<number> {
    this.outputs = 0;
    const started = performance.now();
    await this.root.run(items);
    const seconds = (performance.now() - started) / 1000;
    if (this.outputs !== items.length) throw new Error(`root.run: ${this.outputs} outputs of ${items.length} items`);
    return seconds;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.root.close();
  }
}

// ---- run ----------------------------------------------------------------------------------------------

interface Case {
  name: string;
  /** For the per-round lines. */
  short: string;
  /** Items/s of one run over `ITEMS` items. */
  run: () => Promise<number> | number;
}

async function main(): Promise<void> {
  const started = performance.now();
  console.log(
    `cluster bench — bun ${Bun.version}, ${navigator.hardwareConcurrency} cores, load ${loadavg()[0]!.toFixed(2)}; ` +
      `identity on ${ITEMS} items { id, payload: 64 chars } per run, ${ROUNDS} rounds after a warm-up round`,
  );
  const items = makeItems(ITEMS);
  const rateOf = (seconds: number) => ITEMS / seconds;

  await using engine = await EngineCase.start("identity", 2);
  await using engineOwned = await EngineCase.start("identity", 2, true);
  console.log("starting local clusters (Root.local: a log server and node processes each)…");
  await using oneNode = await RootCase.start(1, 2);
  await using twoNodes = await RootCase.start(2, 1);
  await using twoNodesTwoWorkers = await RootCase.start(2, 2);
  await using unbatched = await RootCase.start(1, 2, 1);
  await using streaming = await RootCase.start(1, 2, undefined, "at-least-once");

  const cases: Case[] = [
    { name: "plain loop: identity(item)", short: "loop", run: () => loopRate(items) },
    {
      name: "plain loop + codec: encode, decode, identity, encode, decode",
      short: "loop+codec",
      run: () => loopCodecRate(items),
    },
    { name: "engine alone, 2 workers", short: "engine", run: async () => rateOf(await engine.run(items)) },
    {
      name: "engine alone, items encoded to bytes of their own (as the root must)",
      short: "engine owned",
      run: async () => rateOf(await engineOwned.run(items)),
    },
    { name: "root, 1 node × 2 workers", short: "root 1×2", run: async () => rateOf(await oneNode.run(items)) },
    { name: "root, 2 nodes × 1 worker", short: "root 2×1", run: async () => rateOf(await twoNodes.run(items)) },
    {
      name: "root, 2 nodes × 2 workers (4 on 2 cores)",
      short: "root 2×2",
      run: async () => rateOf(await twoNodesTwoWorkers.run(items)),
    },
    {
      name: "root, 1 node × 2 workers, maxBatch 1",
      short: "root 1×2 batch 1",
      run: async () => rateOf(await unbatched.run(items)),
    },
    {
      name: "root, 1 node × 2 workers, fed by run(items)",
      short: "root 1×2 run()",
      run: async () => rateOf(await oneNode.runIterable(items)),
    },
    {
      name: 'root, 1 node × 2 workers, delivery: "at-least-once"',
      short: "root 1×2 at-least-once",
      run: async () => rateOf(await streaming.run(items)),
    },
  ];
  const rates = new Map<string, number[]>(cases.map((c) => [c.name, []]));
  for (let round = 0; round <= ROUNDS; round++) {
    const measured = new Map<Case, number>();
    for (let i = 0; i < cases.length; i++) {
      const c = cases[(round + i) % cases.length]!;
      measured.set(c, await c.run());
    }
    if (round > 0) for (const [c, rate] of measured) rates.get(c.name)!.push(rate);
    const line = cases.map((c) => `${c.short} ${fmtRate(measured.get(c)!)}`).join(" · ");
    console.log(`  ${round === 0 ? "warm-up" : `round ${round}`}: ${line}`);
  }

  // CPU-bound: wall time of SPIN_ITEMS × 10 ms on 2 workers, engine alone and 2 nodes × 1 worker.
  const spinItems = Array.from({ length: SPIN_ITEMS }, () => ({ ms: SPIN_MS }));
  const idealMs = (SPIN_ITEMS * SPIN_MS) / 2;
  console.log(
    `CPU-bound: ${SPIN_ITEMS} items × ${SPIN_MS} ms on 2 workers (ideal ${idealMs} ms), ${SPIN_RUNS} runs each, alternating…`,
  );
  await twoNodes.setup(spin);
  await using spinEngine = await EngineCase.start("spin", 2);
  const spinWall = { engine: [] as number[], root: [] as number[] };
  await twoNodes.run(spinItems.slice(0, 20)); // the task module loaded and warm on both nodes
  await spinEngine.run(spinItems.slice(0, 20));
  for (let run = 0; run < SPIN_RUNS; run++) {
    spinWall.root.push((await twoNodes.run(spinItems)) * 1000);
    spinWall.engine.push((await spinEngine.run(spinItems)) * 1000);
  }

  // ---- report ----
  const rateRow = new Map(cases.map((c) => [c.name, rates.get(c.name)!]));
  const within = (a: string, b: string) => rateRow.get(a)!.map((rate, i) => rate / rateRow.get(b)![i]!);
  const [loop, loopCodec, engineName, engineOwnedName, root12, root21, root22, root12b1, root12run, root12least] =
    cases.map((c) => c.name) as [string, string, string, string, string, string, string, string, string, string];
  const fmtSmall = (ratio: number) => (ratio >= 0.1 ? fmtRatio(ratio) : `${ratio.toPrecision(2)}×`);
  const out = ["", "═".repeat(110), "cluster summary", ""];
  out.push(
    `items/s = median of ${ROUNDS} rounds (best = fastest round); × engine and × loop+codec = median of the within-round ratios`,
    "",
    table(
      ["identity, items/s", "median", "range", "best", "× engine", "× loop+codec"],
      cases.map((c) => {
        const r = rates.get(c.name)!;
        return [
          c.name,
          fmtRate(median(r)),
          fmtRange(r, fmtRate),
          fmtRate(Math.max(...r)),
          fmtRatio(median(within(c.name, engineName))),
          fmtRatio(median(within(c.name, loopCodec))),
        ];
      }),
    ),
    "",
  );
  const ofEngine = median(within(root12, engineName));
  const root12Rate = median(rates.get(root12)!);
  const batching = median(within(root12, root12b1));
  const ratioRows: string[][] = [
    ["root 1 node ÷ engine alone", fmtRatio(ofEngine), within(root12, engineName).map(fmtRatio).join(" ")],
    [
      "root 2 nodes × 1 ÷ engine alone",
      fmtRatio(median(within(root21, engineName))),
      within(root21, engineName).map(fmtRatio).join(" "),
    ],
    [
      "root 2 nodes × 2 ÷ engine alone",
      fmtRatio(median(within(root22, engineName))),
      within(root22, engineName).map(fmtRatio).join(" "),
    ],
    [
      "root 1 node ÷ engine, items in bytes of their own",
      fmtRatio(median(within(root12, engineOwnedName))),
      within(root12, engineOwnedName).map(fmtRatio).join(" "),
    ],
    [
      "root 1 node ÷ plain loop + codec",
      fmtRatio(median(within(root12, loopCodec))),
      within(root12, loopCodec).map(fmtRatio).join(" "),
    ],
    ["root 1 node ÷ plain loop", fmtSmall(median(within(root12, loop))), within(root12, loop).map(fmtSmall).join(" ")],
    ["batching: adaptive ÷ maxBatch 1 (1 node)", fmtRatio(batching), within(root12, root12b1).map(fmtRatio).join(" ")],
    [
      "run(items) ÷ feed (1 node)",
      fmtRatio(median(within(root12run, root12))),
      within(root12run, root12).map(fmtRatio).join(" "),
    ],
    [
      "exactly-once ÷ at-least-once (1 node)",
      fmtRatio(median(within(root12, root12least))),
      within(root12, root12least).map(fmtRatio).join(" "),
    ],
  ];
  out.push(table(["ratio (same round)", "median", "per round"], ratioRows), "");

  const cpuRows = (["root", "engine"] as const).map((which) => {
    const walls = spinWall[which];
    return [
      which === "root" ? "root, 2 nodes × 1 worker" : "engine alone, 2 workers",
      `${median(walls).toFixed(0)} ms`,
      walls.map((ms) => `${ms.toFixed(0)}`).join(" "),
      pct(idealMs / median(walls)),
    ];
  });
  out.push(
    `CPU-bound: ${SPIN_ITEMS} items × ${SPIN_MS} ms busy loop, ideal ${idealMs} ms on 2 workers (median of ${SPIN_RUNS} runs, alternating)`,
    "",
    table(["case", "wall", "runs (ms)", "% of ideal"], cpuRows),
    `root ÷ engine on the same items: ${pct(median(spinWall.engine.map((ms, i) => ms / spinWall.root[i]!)))} of the engine's speed (median of the per-run ratios)`,
    "",
  );
  const cpu = idealMs / median(spinWall.root);
  const exactlyOnce = median(within(root12, root12least));
  console.log(out.join("\n"));
  console.log("aims");
  aim("root with 1 node, of the engine's items/s", ofEngine, AIM_OF_ENGINE, { format: pct });
  aim("root with 1 node, identity items", root12Rate, AIM_ITEMS_PER_S, {
    format: fmtRate,
    note: `(${rates.get(root12)!.filter((r) => r >= AIM_ITEMS_PER_S).length} of ${ROUNDS} rounds at or above)`,
  });
  aim("CPU-bound on 2 nodes × 1 worker, of ideal", cpu, AIM_CPU_OF_IDEAL, { format: pct });
  aim("exactly-once, of at-least-once's identity items/s (1 node, same round)", exactlyOnce, AIM_EXACTLY_ONCE, {
    format: pct,
  });
  console.log(
    `(load average now ${loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}; the bench took ${((performance.now() - started) / 1000).toFixed(0)} s)`,
  );
}

await main();
