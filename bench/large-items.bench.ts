/**
 * Large items bench: the machine's license and copyright texts (~900 documents, 20 MB, a few hundred
 * bytes to 2 MB each) fed as items, each a string, through `Root.local` (1 node × 2 workers) to a task
 * that takes them and gives nothing — the way in alone: the root encodes and sends, the node's socket
 * thread copies into the rings, the workers decode. In the same run, the baseline: the same documents
 * written as UTF-8 into one reused buffer and sent over a raw Bun socket on loopback to a process that
 * throws them away — what sending those bytes costs at the least.
 *
 * Printed: per run of all the documents, the root's CPU against the raw sender's, the node process's
 * CPU, and the wall rate. Then one item of PCLUSTER_BENCH_BIG_MB (64) MB of bytes (a Uint8Array, a
 * file's), sent to the task that discards it and to one that gives it back, beside the raw sender's
 * CPU for the same bytes: an item over 4 MiB travels in parts, each copied once where it is joined. A fresh buffer is faulted in page by page (about 10 µs a page on this VM),
 * so this guards that large items cost their bytes, not fresh memory (see ARCHITECTURE.md). Last, a
 * stream of PCLUSTER_BENCH_STREAM_ITEMS (50) items of 8 MiB each, one after the other to the task that
 * discards them, beside the raw sender's CPU for the same bytes: the memory of items done is taken again
 * for the next (the root's feed chunks, the node's kept buffers), so a stream costs its bytes too; and
 * PCLUSTER_BENCH_ECHO_ITEMS (200) items of 1 MiB there and back, whose results frames the root
 * assembles from many socket reads, in memory it takes again.
 *
 *   bun run bench large-items
 *   env: PCLUSTER_BENCH_RUNS (5), PCLUSTER_BENCH_BIG_MB (64), PCLUSTER_BENCH_STREAM_ITEMS (50),
 *   PCLUSTER_BENCH_ECHO_ITEMS (200)
 */
import { loadavg } from "node:os";
import { join } from "node:path";
import { startLocalCluster } from "../src/root/local.ts";
import { Root } from "../src/root/root.ts";
import { documents } from "./support/documents.ts";
import { processCpuSeconds } from "./support/process-cpu.ts";
import { aim } from "./support/aim.ts";
import { fmtRatio, median, table } from "./support/report.ts";
import { discard, identity } from "./support/tasks/index.ts";

const RUNS = Number(process.env.PCLUSTER_BENCH_RUNS ?? 5);
const BIG_BYTES = Number(process.env.PCLUSTER_BENCH_BIG_MB ?? 64) * 1e6;
const TASKS = join(import.meta.dir, "support/tasks");
const STREAM_ITEMS = Number(process.env.PCLUSTER_BENCH_STREAM_ITEMS ?? 50);
const STREAM_ITEM_BYTES = 8 * 1024 * 1024;
const ECHO_ITEMS = Number(process.env.PCLUSTER_BENCH_ECHO_ITEMS ?? 200);
/** One large item one way: the root's CPU at most this many times the raw sender's for its bytes. */
const AIM_BIG_ONE_WAY_OF_RAW = 4;

/** A process that listens on loopback, throws away what it receives, and says how much at each end. */
const SINK = `
let bytes = 0;
const server = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: {
  data(_socket, data) { bytes += data.length; },
  close() { console.log("got " + bytes); bytes = 0; },
} });
console.log("port " + server.port);
`;

/** CPU milliseconds of this process so far (all its threads). */
function ownCpuMs(): number {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1000;
}

/**
 * Sends every document's UTF-8 (or bytes as they are) over one raw socket, each string written into one
 * reused buffer; resolves once the sink has it all.
 */
async function rawSend(
  port: number,
  docs: ReadonlyArray<string | Uint8Array>,
  sink: AsyncIterator<string>,
): Promise<number> {
  const buffer = Buffer.allocUnsafe(8 * 1024 * 1024);
  let waiting: (() => void) | undefined;
  const socket = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    socket: {
      data() {},
      drain() {
        waiting?.();
      },
    },
  });
  let total = 0;
  for (const doc of docs) {
    const length = typeof doc === "string" ? buffer.write(doc, 0, "utf8") : doc.length;
    let view = typeof doc === "string" ? buffer.subarray(0, length) : doc;
    while (view.length > 0) {
      const written = socket.write(view);
      view = view.subarray(Math.max(0, written));
      if (view.length > 0) await new Promise<void>((resolve) => (waiting = resolve));
    }
    total += length;
  }
  socket.end();
  const line = await sink.next(); // "got <bytes>": everything arrived
  if (line.value !== `got ${total}`) throw new Error(`the sink got "${line.value}", not ${total} bytes`);
  return total;
}

/** One run: CPU (ms) of the raw sender for `items`, then of pcluster's root and node for the same, and pcluster's seconds. */
interface TimedRun {
  raw: number;
  root: number;
  node: number;
  seconds: number;
}

async function timedRun(
  root: Root,
  items: ReadonlyArray<string | Uint8Array>,
  port: number,
  sink: AsyncIterator<string>,
  node: number,
): Promise<TimedRun> {
  let cpu = ownCpuMs();
  await rawSend(port, items, sink);
  const raw = ownCpuMs() - cpu;
  cpu = ownCpuMs();
  const nodeBefore = processCpuSeconds(node);
  const started = performance.now();
  await root.run(items);
  const seconds = (performance.now() - started) / 1000;
  return { raw, root: ownCpuMs() - cpu, node: (processCpuSeconds(node) - nodeBefore) * 1000, seconds };
}

const range = (values: number[], digits = 0) =>
  `${Math.min(...values).toFixed(digits)}–${Math.max(...values).toFixed(digits)}`;
/** Milliseconds per run: the median and the range. */
const perRun = (values: number[]) => `${median(values).toFixed(0)} ms (${range(values)})`;

/** One item of BIG_BYTES bytes, one way and there and back, beside the raw sender's CPU for its bytes. */
async function bigItem(root: Root, port: number, sink: AsyncIterator<string>, node: number): Promise<void> {
  const big = new Uint8Array(BIG_BYTES);
  for (let i = 0; i < big.length; i += 4096) big[i] = i & 0xff; // every page written: none is shared zeroes
  const megabytes = BIG_BYTES / 1e6;
  const rows: string[][] = [];
  let oneWayOfRaw = Number.NaN;
  for (const [label, task] of [
    ["one way (task discards it)", discard],
    ["there and back (task returns it)", identity],
  ] as const) {
    let back = 0;
    await root.setup(`big-item-${task.name}`, "1", [{ function: task }], {
      localPackages: [TASKS],
      outputHandler: (output: unknown) => void (back += (output as Uint8Array | null)?.length ?? 0),
    });
    await root.run([big]); // warm
    const runs: TimedRun[] = [];
    for (let run = 1; run <= RUNS; run++) {
      back = 0;
      runs.push(await timedRun(root, [big], port, sink, node));
      if (task === identity && back !== BIG_BYTES) throw new Error(`${back} bytes came back, not ${BIG_BYTES}`);
    }
    const seconds = runs.map((run) => run.seconds);
    const ofRaw = median(runs.map((run) => run.root / run.raw));
    if (task === discard) oneWayOfRaw = ofRaw;
    rows.push([
      label,
      fmtRatio(ofRaw),
      perRun(runs.map((run) => run.root)),
      perRun(runs.map((run) => run.node)),
      perRun(seconds.map((s) => s * 1000)),
      `${(megabytes / median(seconds)).toFixed(0)} MB/s`,
    ]);
  }
  console.log(
    [
      "",
      `one item of ${megabytes.toFixed(0)} MB of bytes (Uint8Array), ${RUNS} runs: medians (ranges); raw = its bytes over a raw socket`,
      table(["", "root ÷ raw CPU", "root CPU", "node CPU", "wall", "rate"], rows),
    ].join("\n"),
  );
  // Its bytes, not fresh memory: one item after another takes the memory of the one before (10–15× when
  // each took fresh memory, faulted in page by page; 1.4–2.4× since).
  aim(
    `one item of ${megabytes.toFixed(0)} MB one way, the root's CPU ÷ the raw sender's`,
    oneWayOfRaw,
    AIM_BIG_ONE_WAY_OF_RAW,
    {
      atMost: true,
      format: fmtRatio,
    },
  );
}

async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let rest = "";
  for await (const chunk of stream) {
    rest += decoder.decode(chunk, { stream: true });
    let newline = rest.indexOf("\n");
    while (newline >= 0) {
      yield rest.slice(0, newline);
      rest = rest.slice(newline + 1);
      newline = rest.indexOf("\n");
    }
  }
}

/**
 * A stream of `count` items of `itemBytes` bytes to `task` (one after the other, as `run` feeds them),
 * beside the raw sender's CPU for their bytes (one way).
 */
async function stream(
  root: Root,
  port: number,
  sink: AsyncIterator<string>,
  node: number,
  shape: { label: string; task: typeof discard | typeof identity; itemBytes: number; count: number },
): Promise<string[]> {
  const { task, itemBytes, count } = shape;
  const item = new Uint8Array(itemBytes);
  for (let i = 0; i < item.length; i += 4096) item[i] = i & 0xff;
  const items = Array<Uint8Array>(count).fill(item);
  const megabytes = (count * itemBytes) / 1e6;
  let back = 0;
  await root.setup(`stream-${task.name}`, "1", [{ function: task }], {
    localPackages: [TASKS],
    outputHandler: (output: unknown) => void (back += (output as Uint8Array | null)?.length ?? 0),
  });
  await root.run(items.slice(0, 4)); // warm
  const runs: TimedRun[] = [];
  for (let run = 1; run <= RUNS; run++) {
    back = 0;
    runs.push(await timedRun(root, items, port, sink, node));
    if (task === identity && back !== count * itemBytes)
      throw new Error(`${back} bytes came back, not ${count * itemBytes}`);
  }
  const seconds = runs.map((run) => run.seconds);
  return [
    shape.label,
    fmtRatio(median(runs.map((run) => run.root / run.raw))),
    perRun(runs.map((run) => run.root)),
    perRun(runs.map((run) => run.node)),
    perRun(seconds.map((s) => s * 1000)),
    `${(megabytes / median(seconds)).toFixed(0)} MB/s`,
  ];
}

/**
 * Streams of items of megabytes: STREAM_ITEMS of 8 MiB one way, the memory of items done taken again for
 * the next (the root's feed chunks, the node's kept buffers); and ECHO_ITEMS of 1 MiB there and back,
 * whose results frames span many socket reads at the root (assembled in memory it takes again).
 */
async function streams(root: Root, port: number, sink: AsyncIterator<string>, node: number): Promise<void> {
  const rows = [
    await stream(root, port, sink, node, {
      label: `${STREAM_ITEMS} items of 8 MiB, one way (task discards them)`,
      task: discard,
      itemBytes: STREAM_ITEM_BYTES,
      count: STREAM_ITEMS,
    }),
    await stream(root, port, sink, node, {
      label: `${ECHO_ITEMS} items of 1 MiB, there and back (task returns them)`,
      task: identity,
      itemBytes: 1024 * 1024,
      count: ECHO_ITEMS,
    }),
  ];
  console.log(
    [
      "",
      `streams of items of megabytes (Uint8Array), ${RUNS} runs: medians (ranges); raw = their bytes one way over a raw socket`,
      table(["", "root ÷ raw CPU", "root CPU", "node CPU", "wall", "rate"], rows),
    ].join("\n"),
  );
}

async function main(): Promise<void> {
  const docs = documents();
  const megabytes = docs.reduce((sum, doc) => sum + Buffer.byteLength(doc), 0) / 1e6;
  console.log(
    `large-items bench — bun ${Bun.version}, ${navigator.hardwareConcurrency} cores, load ${loadavg()[0]!.toFixed(2)}; ` +
      `${docs.length} documents, ${megabytes.toFixed(1)} MB (largest ${(Math.max(...docs.map((d) => d.length)) / 1e6).toFixed(1)} MB); ${RUNS} runs, alternating`,
  );
  const sinkProcess = Bun.spawn([process.execPath, "-e", SINK], { stdout: "pipe", stderr: "inherit" });
  const sink = lines(sinkProcess.stdout);
  const port = Number((await sink.next()).value!.split(" ")[1]);
  const cluster = await startLocalCluster({ nodes: 1, workers: 2 });
  const root = new Root(cluster.nodes);
  const node = cluster.processes.find((process) => process.name === "node-0")!.pid;
  try {
    await root.setup("large-items", "1", [{ function: discard }], { localPackages: [TASKS] });
    await root.run(docs); // warm: the workers' JIT, the pools
    await rawSend(port, docs, sink);
    const raw: number[] = [];
    const rootCpu: number[] = [];
    const nodeCpu: number[] = [];
    const rates: number[] = [];
    const ratios: number[] = [];
    for (let run = 1; run <= RUNS; run++) {
      const timed = await timedRun(root, docs, port, sink, node);
      raw.push(timed.raw);
      rootCpu.push(timed.root);
      nodeCpu.push(timed.node);
      rates.push(megabytes / timed.seconds);
      ratios.push(timed.root / timed.raw);
      console.log(
        `  run ${run}: raw sender ${timed.raw.toFixed(0)} ms CPU · pcluster root ${timed.root.toFixed(0)} ms, ` +
          `node ${timed.node.toFixed(0)} ms, ${rates.at(-1)!.toFixed(0)} MB/s`,
      );
    }
    console.log(
      [
        "",
        table(
          ["feeding the documents once", "median (range)"],
          [
            ["raw socket sender, CPU (baseline)", perRun(raw)],
            ["pcluster root, CPU", perRun(rootCpu)],
            ["pcluster node process, CPU (socket thread and workers)", perRun(nodeCpu)],
            ["pcluster, wall rate", `${median(rates).toFixed(0)} MB/s (${range(rates)})`],
          ],
        ),
        "",
        `root CPU ÷ raw sender CPU, same run: ${fmtRatio(median(ratios))} (runs ${range(ratios, 2)})`,
      ].join("\n"),
    );
    await bigItem(root, port, sink, node);
    await streams(root, port, sink, node);
    console.log(
      `(load average now ${loadavg()
        .map((l) => l.toFixed(2))
        .join(" ")})`,
    );
  } finally {
    await root.close();
    await cluster.stop();
    sinkProcess.kill();
  }
}

await main();
