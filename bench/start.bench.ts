/**
 * Start bench: `Root.local({ nodes: 16 })` plus `setup()` of a package without dependencies, from the
 * call to the resolved setup, beside the same run's floor: the same layout of bare processes and bare
 * Worker threads that load nothing (16 × `bun bench/support/bare-start.ts <workers>`). Runs alternate
 * with the floor, so both see the same machine load; the ratio is the figure to compare across runs.
 * CPU is broken down by where it went: the root (this process), the log server, the nodes until they
 * listen, and the nodes during setup (install, workers, task package), each per node beside the bare
 * process's CPU.
 *
 *   bun run bench start
 * The layout "4+log" ships a task package that imports `log` from "pcluster", as task packages do: its
 * Worker threads load pcluster's public surface too.
 *
 * Then the cluster idles, set up and its root connected, as one waiting for input does: after a second
 * and a half to settle, each node's CPU over the next two seconds, per second, beside a bare process
 * whose bare threads idle as long (what idling costs a process and its threads that run nothing).
 *
 *   bun run bench start
 *   env: PCLUSTER_BENCH_START_NODES (16), PCLUSTER_BENCH_START_RUNS (3), PCLUSTER_BENCH_START_WORKERS ("default,4,4+log")
 */
import { loadavg } from "node:os";
import { join } from "node:path";
import { setDefaultLogAddress } from "../src/log/log.ts";
import { startLocalCluster } from "../src/root/local.ts";
import { Root } from "../src/root/root.ts";
import { aim } from "./support/aim.ts";
import { processCpuSeconds } from "./support/process-cpu.ts";
import { fmtRange, fmtRatio, median, table } from "./support/report.ts";
import { identityLogging } from "./support/logging-tasks/index.ts";
import { identity } from "./support/tasks/index.ts";

const NODES = Number(process.env.PCLUSTER_BENCH_START_NODES ?? 16);
const RUNS = Number(process.env.PCLUSTER_BENCH_START_RUNS ?? 3);
/**
 * Workers per node of each layout: "default" (Root.local's) and 4, the table; "+log": with a task
 * package that imports `log` from "pcluster".
 */
const WORKERS = (process.env.PCLUSTER_BENCH_START_WORKERS ?? "default,4,4+log").split(",");
const TASKS_PACKAGE = join(import.meta.dir, "support/tasks");
const LOGGING_TASKS_PACKAGE = join(import.meta.dir, "support/logging-tasks");
const BARE_START = join(import.meta.dir, "support/bare-start.ts");
/** The aim: 16 local nodes (default workers) started and set up within this, on the 2-core machine. */
const AIM_START_S = 2.5;
/** `Root.local`'s default: the cores shared between the nodes, at least one worker each. */
const DEFAULT_WORKERS = Math.max(1, Math.floor(navigator.hardwareConcurrency / NODES));

interface PclusterRun {
  seconds: number;
  rootCpu: number;
  logCpu: number;
  /** Per node, until it listens. */
  nodeListenCpu: number;
  /** Per node, from listening to the end of setup. */
  nodeSetupCpu: number;
  /** Per node, CPU seconds a second while set up and idle. */
  nodeIdleCpu: number;
}

interface BareRun {
  seconds: number;
  /** Per process. */
  cpu: number;
  /** Per process, CPU seconds a second while idle. */
  idleCpu: number;
}

const rootCpuSeconds = () => {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
};
const sum = (values: number[]) => values.reduce((a, b) => a + b, 0);
/** Before the idle CPU is measured (a node slows its looks after a second without items), and how long. */
const IDLE_SETTLE_MS = 1500;
const IDLE_MS = 2000;

/** CPU seconds per second and per process of `pids` over IDLE_MS, after IDLE_SETTLE_MS. */
async function idleCpu(pids: number[]): Promise<number> {
  await Bun.sleep(IDLE_SETTLE_MS);
  const before = sum(pids.map(processCpuSeconds));
  const started = performance.now();
  await Bun.sleep(IDLE_MS);
  const spent = sum(pids.map(processCpuSeconds)) - before;
  return spent / ((performance.now() - started) / 1000) / pids.length;
}

async function pclusterStart(workers: number | undefined, logging: boolean): Promise<PclusterRun> {
  const rootBefore = rootCpuSeconds();
  const started = performance.now();
  const cluster = await startLocalCluster({ nodes: NODES, workers });
  const nodePids = cluster.processes.filter((p) => p.name.startsWith("node-")).map((p) => p.pid);
  const listening = nodePids.map(processCpuSeconds);
  setDefaultLogAddress(cluster.logAddress);
  const root = new Root(cluster.nodes);
  try {
    await root.setup("start-bench", "1", [{ function: logging ? identityLogging : identity }], {
      localPackages: [logging ? LOGGING_TASKS_PACKAGE : TASKS_PACKAGE],
      outputHandler: () => {},
    });
    const seconds = (performance.now() - started) / 1000;
    const setUp = nodePids.map(processCpuSeconds);
    const rootCpu = rootCpuSeconds() - rootBefore;
    const logCpu = processCpuSeconds(cluster.processes[0]!.pid);
    return {
      seconds,
      rootCpu,
      logCpu,
      nodeListenCpu: sum(listening) / NODES,
      nodeSetupCpu: (sum(setUp) - sum(listening)) / NODES,
      nodeIdleCpu: await idleCpu(nodePids),
    };
  } finally {
    await root.close();
    await cluster.stop();
  }
}

/** NODES bare processes of `workers` bare Worker threads each, started at once: until all say ready. */
async function bareStart(workers: number): Promise<BareRun> {
  const started = performance.now();
  const children = Array.from({ length: NODES }, () =>
    Bun.spawn([process.execPath, BARE_START, String(workers)], { stdin: "pipe", stdout: "pipe", stderr: "inherit" }),
  );
  try {
    await Promise.all(children.map(readyOf));
    const seconds = (performance.now() - started) / 1000;
    const cpu = sum(children.map((child) => processCpuSeconds(child.pid))) / NODES;
    return { seconds, cpu, idleCpu: await idleCpu(children.map((child) => child.pid)) };
  } finally {
    for (const child of children) child.stdin.end();
    await Promise.all(children.map((child) => child.exited));
  }
}

/** Resolves once the child printed "ready". */
async function readyOf(child: { stdout: ReadableStream<Uint8Array> }): Promise<void> {
  const decoder = new TextDecoder();
  let text = "";
  for await (const chunk of child.stdout) {
    text += decoder.decode(chunk, { stream: true });
    if (text.includes("ready")) return;
  }
  throw new Error(`a bare process ended before it was ready: ${JSON.stringify(text)}`);
}

const fmtS = (s: number) => `${s.toFixed(2)} s`;
const fmtMs = (s: number) => `${(s * 1000).toFixed(0)} ms`;
const fmtMsPerS = (s: number) => `${(s * 1000).toFixed(1)} ms/s`;

async function main(): Promise<void> {
  const benchStarted = performance.now();
  console.log(
    `start bench — bun ${Bun.version}, ${navigator.hardwareConcurrency} cores, load ${loadavg()[0]!.toFixed(2)}; ` +
      `Root.local({ nodes: ${NODES} }) + setup() of a package without dependencies, ${RUNS} runs alternating with the floor`,
  );
  type Layout = [label: string, workers: number | undefined, bareWorkers: number, logging: boolean];
  const layouts = WORKERS.map((layout): Layout => {
    const logging = layout.endsWith("+log");
    const workers = layout.replace(/\+log$/, "");
    const imports = logging ? ", tasks import pcluster" : "";
    return workers === "default"
      ? [`${NODES} × default (${DEFAULT_WORKERS})${imports}`, undefined, DEFAULT_WORKERS, logging]
      : [`${NODES} × ${workers}${imports}`, Number(workers), Number(workers), logging];
  });
  const rows: string[][] = [];
  const cpuRows: string[][] = [];
  const idleRows: string[][] = [];
  let defaultSeconds: number[] = [];
  for (const [label, workers, bareWorkers, logging] of layouts) {
    const ours: PclusterRun[] = [];
    const bare: BareRun[] = [];
    for (let run = 0; run < RUNS; run++) {
      console.log(`  ${label}: run ${run + 1}…`);
      bare.push(await bareStart(bareWorkers));
      ours.push(await pclusterStart(workers, logging));
    }
    const seconds = ours.map((r) => r.seconds);
    if (workers === undefined && !logging) defaultSeconds = seconds;
    rows.push([
      label,
      fmtS(median(seconds)),
      fmtRange(seconds, fmtS),
      fmtS(median(bare.map((b) => b.seconds))),
      fmtRange(
        bare.map((b) => b.seconds),
        fmtS,
      ),
      fmtRatio(median(ours.map((r, i) => r.seconds / bare[i]!.seconds))),
    ]);
    cpuRows.push([
      label,
      fmtMs(median(ours.map((r) => r.rootCpu))),
      fmtMs(median(ours.map((r) => r.logCpu))),
      fmtMs(median(ours.map((r) => r.nodeListenCpu))),
      fmtMs(median(ours.map((r) => r.nodeSetupCpu))),
      fmtMs(median(bare.map((b) => b.cpu))),
      fmtS(median(ours.map((r) => r.rootCpu + r.logCpu + NODES * (r.nodeListenCpu + r.nodeSetupCpu)))),
      fmtS(median(bare.map((b) => NODES * b.cpu))),
    ]);
    const idle = ours.map((r) => r.nodeIdleCpu);
    const bareIdle = bare.map((b) => b.idleCpu);
    idleRows.push([
      label,
      fmtMsPerS(median(idle)),
      fmtRange(idle, fmtMsPerS),
      fmtMsPerS(median(bareIdle)),
      fmtRange(bareIdle, fmtMsPerS),
    ]);
  }
  console.log(
    [
      "",
      "═".repeat(100),
      "start summary",
      "",
      `wall time from the call of Root.local to the resolved setup; floor = ${NODES} bare processes × the same bare Worker threads`,
      "",
      table(["layout", "start + setup", "range", "floor", "range", "× floor"], rows),
      "",
      "CPU: the root, the log server, each node until it listens and during setup (medians); a bare process; totals",
      "",
      table(["layout", "root", "log", "node: listen", "node: setup", "bare process", "total", "bare total"], cpuRows),
      "",
      `idle, set up with the root connected: CPU per node per second over ${IDLE_MS / 1000} s, after ${IDLE_SETTLE_MS / 1000} s to settle; a bare process whose threads idle as long`,
      "",
      table(["layout", "node idle", "range", "bare process idle", "range"], idleRows),
      "",
    ].join("\n"),
  );
  console.log("aims");
  if (defaultSeconds.length > 0)
    aim(`Root.local({ nodes: ${NODES} }) + setup(), default workers`, median(defaultSeconds), AIM_START_S, {
      atMost: true,
      format: fmtS,
      note: `(runs: ${defaultSeconds.map(fmtS).join(" ")})`,
    });
  console.log(
    `(load average now ${loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}; the bench took ${((performance.now() - benchStarted) / 1000).toFixed(0)} s)`,
  );
}

await main();
