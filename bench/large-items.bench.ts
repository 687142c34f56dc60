/**
 * Large items bench: the machine's license and copyright texts (~900 documents, 20 MB, a few hundred
 * bytes to 2 MB each) fed as items, each a string, through `Root.local` (1 node × 2 workers) to a task
 * that takes them and gives nothing — the way in alone: the root encodes and sends, the node's socket
 * thread copies into the rings, the workers decode. In the same run, the baseline: the same documents
 * written as UTF-8 into one reused buffer and sent over a raw Bun socket on loopback to a process that
 * throws them away — what sending those bytes costs at the least.
 *
 * Printed: per run of all the documents, the root's CPU against the raw sender's, the node process's
 * CPU, and the wall rate. A fresh buffer is faulted in page by page (about 10 µs a page on this VM),
 * so this guards that large items cost their bytes, not fresh memory (see ARCHITECTURE.md).
 *
 *   bun run bench large-items
 *   env: PCLUSTER_BENCH_RUNS (5)
 */
import { loadavg } from "node:os";
import { join } from "node:path";
import { startLocalCluster } from "../src/root/local.ts";
import { Root } from "../src/root/root.ts";
import { documents } from "./support/documents.ts";
import { processCpuSeconds } from "./support/process-cpu.ts";
import { fmtRatio, median, table } from "./support/report.ts";
import { discard } from "./support/tasks/index.ts";

const RUNS = Number(process.env.PCLUSTER_BENCH_RUNS ?? 5);
const TASKS = join(import.meta.dir, "support/tasks");

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

/** Sends every document's UTF-8 over one raw socket, each written into one reused buffer; resolves once the sink has it all. */
async function rawSend(port: number, docs: readonly string[], sink: AsyncIterator<string>): Promise<number> {
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
    const length = buffer.write(doc, 0, "utf8");
    let view = buffer.subarray(0, length);
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
      let cpu = ownCpuMs();
      await rawSend(port, docs, sink);
      raw.push(ownCpuMs() - cpu);
      cpu = ownCpuMs();
      const nodeBefore = processCpuSeconds(node);
      const started = performance.now();
      await root.run(docs);
      const seconds = (performance.now() - started) / 1000;
      rootCpu.push(ownCpuMs() - cpu);
      nodeCpu.push((processCpuSeconds(node) - nodeBefore) * 1000);
      rates.push(megabytes / seconds);
      ratios.push(rootCpu.at(-1)! / raw.at(-1)!);
      console.log(
        `  run ${run}: raw sender ${raw.at(-1)!.toFixed(0)} ms CPU · pcluster root ${rootCpu.at(-1)!.toFixed(0)} ms, ` +
          `node ${nodeCpu.at(-1)!.toFixed(0)} ms, ${rates.at(-1)!.toFixed(0)} MB/s`,
      );
    }
    const range = (values: number[], digits = 0) =>
      `${Math.min(...values).toFixed(digits)}–${Math.max(...values).toFixed(digits)}`;
    const perRun = (values: number[]) => `${median(values).toFixed(0)} ms (${range(values)})`;
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
        `(load average now ${loadavg()
          .map((l) => l.toFixed(2))
          .join(" ")})`,
      ].join("\n"),
    );
  } finally {
    await root.close();
    await cluster.stop();
    sinkProcess.kill();
  }
}

await main();
