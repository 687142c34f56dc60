/**
 * Scheduler bench: the root's scheduling logic on its own — queue, per-node window, batching into feed
 * frames, ledger, and the Done that frees the window again — with no socket and no node. Each node is
 * a `FakeNode`: a FeedTarget that counts the frame's bytes, reads the ids of its records, and on the
 * next microtask answers as a node that keeps up would: "all my workers are idle", then Done for every
 * item of the frame. So the figure is what the scheduler costs per item when nothing else limits it.
 *
 * Baseline, measured in the same run: a plain loop copying the same encoded items into one buffer —
 * the irreducible work of getting them into frames. Between the two, RecordBatchBuilder alone (record
 * headers, frame head, a fresh buffer per frame) shows what part of the cost is framing.
 *
 * Also AdaptiveWindow's calls, per call, against one `performance.now()` (which the scheduler pays
 * beside each window sample).
 *
 * Like bench/framing.bench.ts: one printed pass through mitata's `run()`, then short interleaved rounds;
 * each ratio is taken within a round, and the summary gives the median of those ratios.
 *
 *   bun run bench scheduler
 *   env: PCLUSTER_BENCH_ROUNDS (4), PCLUSTER_BENCH_SCHED_ITEMS (100000)
 */
import { bench, do_not_optimize, group, measure, run } from "mitata";
import { loadavg } from "node:os";
import { RecordBatchBuilder, encode } from "../src/protocol/codec.ts";
import { RecordKind, RecordReader } from "../src/protocol/record.ts";
import { blobFrameBytes } from "../src/protocol/frame.ts";
import { type FeedTarget, type NodeLane, Scheduler, type SchedulerOptions } from "../src/root/scheduler.ts";
import { AdaptiveWindow } from "../src/root/window.ts";
import { fmtRange, fmtRate, fmtRatio, median, table } from "./support/report.ts";
import { makeItems } from "./support/tasks/index.ts";

const ITEMS = Number(process.env.PCLUSTER_BENCH_SCHED_ITEMS ?? 100_000);
/** A frame per item costs ~25× more per item: fewer items per call keep mitata's samples short. */
const UNBATCHED_ITEMS = Math.ceil(ITEMS / 10);
const ROUNDS = Number(process.env.PCLUSTER_BENCH_ROUNDS ?? 4);
const ROUND_CPU_NS = 200e6;
/** What a real node grants per worker at setup (src/node/server.ts): items, and ring bytes × 4. */
const GRANT_ITEMS_PER_WORKER = 16_384;
const GRANT_BYTES_PER_WORKER = 4 << 20;
const WORKERS_PER_NODE = 2;
/** Bytes in front of a feed frame's records: frame header and `{ t: "feed", blob: bin32 }`. */
const FEED_HEAD_BYTES = blobFrameBytes("feed", undefined, 0);

// ---- fake nodes ---------------------------------------------------------------------------------------

/**
 * A node as far as the scheduler can tell: it takes feed frames and answers, one microtask later, with
 * its idle workers (all of them: it keeps up) and Done for every item of the frame.
 */
class FakeNode implements FeedTarget {
  lane: NodeLane | undefined;
  frames = 0;
  items = 0;
  bytes = 0;

  constructor(
    readonly address: string,
    readonly scheduler: Scheduler,
    readonly onDone: (items: number) => void,
  ) {}

  sendFeed(pieces: readonly Uint8Array[]): void {
    // Small items come in one piece; larger spans by reference, after the head.
    const frame = pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces);
    this.frames++;
    this.bytes += frame.length;
    const ids: number[] = [];
    const reader = new RecordReader(frame.subarray(FEED_HEAD_BYTES));
    while (reader.next()) ids.push(reader.id);
    this.items += ids.length;
    queueMicrotask(() => this.#answer(ids));
  }

  #answer(ids: number[]): void {
    const lane = this.lane!;
    // As the root does on a results frame: the node's idle count first, then its Done records.
    this.scheduler.reportIdle(lane, WORKERS_PER_NODE);
    for (const id of ids) {
      if (!this.scheduler.complete(lane, id))
        throw new Error(`fake node ${this.address}: item ${id} was not in flight here`);
    }
    this.onDone(ids.length);
  }
}

/** A scheduler with `nodes` fake nodes, kept for the whole bench (its windows stay grown, as in a long run). */
class FakeCluster {
  readonly scheduler: Scheduler;
  readonly nodes: FakeNode[];
  #expected = 0;
  #done = 0;
  #resolve: (() => void) | undefined;

  constructor(nodes: number, options?: SchedulerOptions) {
    this.scheduler = new Scheduler(options);
    this.nodes = Array.from(
      { length: nodes },
      (_, i) => new FakeNode(`fake-${i}`, this.scheduler, (n) => this.#onDone(n)),
    );
    for (const node of this.nodes) {
      node.lane = this.scheduler.addLane(node, WORKERS_PER_NODE, {
        items: WORKERS_PER_NODE * GRANT_ITEMS_PER_WORKER,
        bytes: WORKERS_PER_NODE * GRANT_BYTES_PER_WORKER,
      });
    }
  }

  /** Queues the items and resolves once every one is done. */
  cycle(items: Uint8Array[]): Promise<void> {
    this.#expected += items.length;
    const drained = new Promise<void>((resolve) => (this.#resolve = resolve));
    this.scheduler.enqueue(items);
    return drained;
  }

  /** Frames and items per frame so far, and the windows now. */
  describe(): string {
    const frames = this.nodes.reduce((sum, node) => sum + node.frames, 0);
    const items = this.nodes.reduce((sum, node) => sum + node.items, 0);
    const windows = this.scheduler.lanes.map((lane) => lane.window.size).join(", ");
    return `${frames} frames, ${(items / frames).toFixed(1)} items per frame on average; window${this.nodes.length > 1 ? "s" : ""} now ${windows}`;
  }

  #onDone(items: number): void {
    this.#done += items;
    if (this.#done === this.#expected) {
      if (this.scheduler.inFlight !== 0 || this.scheduler.queued !== 0)
        throw new Error("fake cluster: done count and scheduler disagree");
      this.#resolve?.();
    }
  }
}

// ---- cases --------------------------------------------------------------------------------------------

interface Case {
  name: string;
  group: "scheduler" | "window";
  /** The case of its group the others are compared to. */
  baseline?: boolean;
  /** Items (or calls) per call of `fn`. */
  items: number;
  fn: () => unknown;
  /** Said after the table (what the case's state looked like at the end). */
  describe?: () => string;
}

function cases(): Case[] {
  const encoded = makeItems(ITEMS).map((item) => encode(item));
  const unbatchedItems = encoded.slice(0, UNBATCHED_ITEMS);
  const totalBytes = encoded.reduce((sum, bytes) => sum + bytes.length, 0);
  const copyTarget = new Uint8Array(totalBytes);
  const builder = new RecordBatchBuilder(64 * 1024);
  const clusters = {
    one: new FakeCluster(1),
    two: new FakeCluster(2),
    unbatched: new FakeCluster(1, { maxBatch: 1 }),
  };

  // The window's inputs: latencies around a floor with now and then a queueing spike, idle counts mostly 0.
  const latencies = Float64Array.from({ length: 1024 }, (_, i) => 2 + (i % 7) + (i % 97 === 0 ? 50 : 0));
  const window = new AdaptiveWindow(4, 32_768);
  let tick = 0;

  return [
    {
      name: "copy loop (baseline)",
      group: "scheduler",
      baseline: true,
      items: ITEMS,
      fn: () => {
        let at = 0;
        for (const bytes of encoded) {
          copyTarget.set(bytes, at);
          at += bytes.length;
        }
        return do_not_optimize(at);
      },
    },
    {
      name: "RecordBatchBuilder, frames of 4096",
      group: "scheduler",
      items: ITEMS,
      fn: () => {
        for (let i = 0; i < encoded.length; i++) {
          builder.append(RecordKind.Input, 0, 0, i, encoded[i]!);
          if (builder.count === 4096) do_not_optimize(builder.finishFrame("feed"));
        }
        if (builder.count > 0) do_not_optimize(builder.finishFrame("feed"));
      },
    },
    {
      name: "scheduler, 1 fake node (adaptive)",
      group: "scheduler",
      items: ITEMS,
      fn: () => clusters.one.cycle(encoded),
      describe: () => clusters.one.describe(),
    },
    {
      name: "scheduler, 2 fake nodes (adaptive)",
      group: "scheduler",
      items: ITEMS,
      fn: () => clusters.two.cycle(encoded),
      describe: () => clusters.two.describe(),
    },
    {
      name: "scheduler, 1 fake node, maxBatch 1",
      group: "scheduler",
      items: UNBATCHED_ITEMS,
      fn: () => clusters.unbatched.cycle(unbatchedItems),
      describe: () => clusters.unbatched.describe(),
    },
    {
      name: "performance.now() (baseline)",
      group: "window",
      baseline: true,
      items: 1,
      fn: () => do_not_optimize(performance.now()),
    },
    {
      name: "AdaptiveWindow.sample",
      group: "window",
      items: 1,
      fn: () => window.sample(latencies[tick++ & 1023]!, tick & 15 ? 0 : 1),
    },
    {
      name: "AdaptiveWindow.starved + batchSize",
      group: "window",
      items: 1,
      fn: () => {
        window.starved();
        return do_not_optimize(window.batchSize(4096));
      },
    },
  ];
}

// ---- run ----------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const started = performance.now();
  console.log(
    `scheduler bench — bun ${Bun.version}, ${navigator.hardwareConcurrency} cores, load ${loadavg()[0]!.toFixed(2)}; ` +
      `${ITEMS} pre-encoded items { id, payload: 64 chars } per cycle, fake nodes of ${WORKERS_PER_NODE} workers granting ` +
      `${WORKERS_PER_NODE * GRANT_ITEMS_PER_WORKER} items`,
  );
  const all = cases();
  const samples = new Map<string, number[]>(all.map((c) => [c.name, []]));
  const rate = (c: Case, nsPerCall: number) => (c.items * 1e9) / nsPerCall;

  // The printed pass.
  for (const name of ["scheduler", "window"] as const) {
    group(
      name === "scheduler"
        ? `${ITEMS} items through the scheduler (per call: all of them)`
        : "AdaptiveWindow (per call)",
      () => {
        for (const c of all.filter((c) => c.group === name)) bench(c.name, c.fn);
      },
    );
  }
  const { benchmarks } = await run({ format: "mitata" });
  benchmarks.forEach((trial) => {
    const stats = trial.runs[0]?.stats;
    if (stats === undefined) throw new Error(`bench "${trial.alias}" failed: ${String(trial.runs[0]?.error)}`);
    const c = all.find((c) => c.name === trial.alias)!;
    samples.get(c.name)!.push(rate(c, stats.p50));
  });

  // Rounds: each group's cases back to back, in a rotating order.
  for (let round = 0; round < ROUNDS; round++) {
    console.log(`round ${round + 1} of ${ROUNDS} (${ROUND_CPU_NS / 1e6} ms per case)…`);
    for (const name of ["scheduler", "window"] as const) {
      const inGroup = all.filter((c) => c.group === name);
      for (let i = 0; i < inGroup.length; i++) {
        const c = inGroup[(round + i) % inGroup.length]!;
        const stats = await measure(c.fn, { min_cpu_time: ROUND_CPU_NS });
        samples.get(c.name)!.push(rate(c, stats.p50));
      }
    }
  }

  const out = ["", "═".repeat(100), "scheduler summary", ""];
  const ratiosTo = (c: Case, base: Case) => samples.get(c.name)!.map((r, i) => r / samples.get(base.name)![i]!);

  const scheduling = all.filter((c) => c.group === "scheduler");
  const copy = scheduling.find((c) => c.baseline === true)!;
  out.push(
    `items/s = median over the printed pass and ${ROUNDS} rounds of mitata's median sample; × copy loop = median of the ` +
      "within-round ratios of items/s to the copy loop's (the baseline)",
    "",
    table(
      ["case", "items/s", "range", "per item", "× copy loop"],
      scheduling.map((c) => {
        const rates = samples.get(c.name)!;
        return [
          c.name,
          fmtRate(median(rates)),
          fmtRange(rates, fmtRate),
          `${(1e9 / median(rates)).toFixed(0)} ns`,
          fmtRatio(median(ratiosTo(c, copy))),
        ];
      }),
    ),
    "",
  );
  for (const c of scheduling) if (c.describe !== undefined) out.push(`  ${c.name}: ${c.describe()}`);

  const windowCalls = all.filter((c) => c.group === "window");
  const now = windowCalls.find((c) => c.baseline === true)!;
  const ns = (rate: number) => `${(1e9 / rate).toFixed(1)} ns`;
  out.push(
    "",
    "AdaptiveWindow, per call; ÷ now() = median of the within-round ratios of its time per call to performance.now()'s (the baseline)",
    "",
    table(
      ["call", "time", "range", "÷ now()"],
      windowCalls.map((c) => {
        const rates = samples.get(c.name)!;
        const times = rates.map((r) => 1e9 / r);
        return [
          c.name,
          ns(median(rates)),
          fmtRange(times, (t) => `${t.toFixed(1)} ns`),
          fmtRatio(median(ratiosTo(c, now).map((r) => 1 / r))),
        ];
      }),
    ),
    "",
  );
  const scheduled = median(samples.get("scheduler, 1 fake node (adaptive)")!);
  const unbatched = median(samples.get("scheduler, 1 fake node, maxBatch 1")!);
  out.push(
    `batching in the scheduler alone: adaptive ${fmtRatio(scheduled / unbatched)} the items/s of maxBatch 1 ` +
      "(medians; a frame per item pays a frame head, a ledger timing sample and a fresh builder buffer per item)",
    `(load average now ${loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}; the bench took ${((performance.now() - started) / 1000).toFixed(0)} s)`,
  );
  console.log(out.join("\n"));
}

await main();
