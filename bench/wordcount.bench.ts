/**
 * Word count bench (issue 14): the machine's license and copyright texts (/usr/share/common-licenses and
 * /usr/share/doc/<pkg>/copyright), each split into lines, the words of 3+ letters of each line counted,
 * all totalled — in the same run:
 *   - a plain single-thread Bun loop folding as it goes, in a Worker thread started for each run: its
 *     first loop is as cold as the pcluster workers that `setup` starts for each case (the reference of
 *     the aims), its second is warm (every total must equal the loop's);
 *   - the floor of any version on two cores: two fresh threads side by side (in a process of their own,
 *     as pcluster's workers are in their node's), each the same loop over one half of the documents
 *     (halves of equal size), timed by the later to finish; no merge, no shipping;
 *   - pcluster, 1 local node × 2 workers: per-line count objects to the root, summed in `outputHandler`;
 *   - pcluster with `combine: "sum-by-key"` (partials folded in the workers, merged on the root), and with
 *     a combiner class doing the same (bench/support/wordcount's WordTotals); "sum-by-key" runs twice on
 *     the workers of one setup: the first run is timed against the cold loop, the second, on warm
 *     workers, against the warm loop;
 *   - Dask distributed's per-item and fold versions: the bench starts a LocalCluster of 2 worker
 *     processes on 127.0.0.1 (bench/support/wordcount_dask.py) with the first python that can import
 *     `distributed` — /usr/bin/python3 first (Debian: `apt install python3-distributed`; a pyenv
 *     `python3` on PATH usually lacks it), then `python3` on PATH; else one line says it is skipped.
 * Each case runs RUNS times, alternating; the report gives the median time, the range and the ratios,
 * the CPU seconds each case took in all its processes and threads (on a machine loaded by other work
 * the wall times stretch; the CPU shows what each case costs), and the aims (bench/support/aim.ts:
 * `bun run bench --check wordcount` fails when one is not met).
 *
 *   bun run bench wordcount
 *   env: PCLUSTER_BENCH_RUNS (3)
 */
import { readFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { startLocalCluster } from "../src/root/local.ts";
import { Root } from "../src/root/root.ts";
import { countWords, lines, WordTotals } from "./support/wordcount/index.ts";
import {
  type LoopRun,
  type Totals,
  wordCountHalvesInFreshProcess,
  wordCountLoop,
  wordCountLoopInFreshThread,
} from "./support/wordcount-loop.ts";
import { documents } from "./support/documents.ts";
import { judgeAim } from "./support/aim.ts";
import { fmtRatio, median, table } from "./support/report.ts";

const RUNS = Number(process.env.PCLUSTER_BENCH_RUNS ?? 3);
const PACKAGE = join(import.meta.dir, "support/wordcount");
const DASK_SCRIPT = join(import.meta.dir, "support/wordcount_dask.py");
const AIM_COMBINER_OF_LOOP = 0.8;
const AIM_COMBINER_OF_DASK_FOLD = 0.5;
const AIM_DASK_PER_ITEM_OVER_PLAIN = 3;

const LOOP = "plain loop (1 thread), a fresh thread each run";
const WARM_LOOP = "plain loop (1 thread), again in that thread";
const FLOOR = "floor: the loop over half the documents in each of 2 fresh threads";
const COMBINER = 'pcluster 1×2, combine: "sum-by-key"';
const WARM_COMBINER = 'pcluster 1×2, combine: "sum-by-key", again on its warm workers';
const PLAIN = "pcluster 1×2, per-line outputs summed on the root";

/** A case's name in the line each run prints: "loop", "sum-by-key", "Dask fold"… */
const shortName = (name: string): string => {
  if (name === LOOP) return "loop";
  if (name === WARM_LOOP) return "warm loop";
  if (name === FLOOR) return "floor";
  if (name === WARM_COMBINER) return "sum-by-key again";
  return `${name.startsWith("Dask") ? "Dask " : ""}${name.split(/, (combine: )?/).pop()}`;
};

function sameTotals(a: Totals, b: Totals): boolean {
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  return keys.every((key) => a[key] === b[key]);
}

const chain = [{ function: lines, isGenerator: true }, { function: countWords }] as const;

/**
 * A case set up, and its run to time. The setup (workers started, package loaded) is timed apart, as
 * Dask's timings start with its cluster up and its workers warm.
 */
type Prepared = () => Promise<Totals>;

async function plain(root: Root, docs: string[]): Promise<Prepared> {
  const totals = new Map<string, number>();
  await root.setup("wordcount", "plain", chain, {
    localPackages: [PACKAGE],
    outputHandler: (counts) => {
      for (const word in counts) totals.set(word, (totals.get(word) ?? 0) + counts[word]!);
    },
  });
  return async () => {
    await root.run(docs);
    return Object.fromEntries(totals);
  };
}

async function combined(root: Root, docs: string[], combine: "sum-by-key" | "class"): Promise<Prepared> {
  await root.setup("wordcount", combine, chain, {
    localPackages: [PACKAGE],
    combine: combine === "class" ? { function: WordTotals } : combine,
  });
  return async () => (await root.run(docs)) as Totals;
}

interface DaskRun {
  perItem: number;
  fold: number;
  /** CPU seconds of the client and the workers during each. */
  perItemCpu: number;
  foldCpu: number;
  perItemTotals: Totals;
  foldTotals: Totals;
}

/** Debian's python first: its python3-distributed is what the README's install note gives. */
const PYTHONS = ["/usr/bin/python3", "python3"];

/** The first python that can import `distributed`, or undefined. */
function daskPython(): string | undefined {
  return PYTHONS.find((python) => {
    try {
      const probe = Bun.spawnSync([python, "-c", "import distributed"], { stdout: "ignore", stderr: "ignore" });
      return probe.exitCode === 0;
    } catch {
      return false; // no such executable
    }
  });
}

async function dask(python: string, docs: string[]): Promise<DaskRun> {
  const child = Bun.spawn([python, DASK_SCRIPT, "2"], { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
  child.stdin.write(JSON.stringify(docs));
  await child.stdin.end();
  const [out, err, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ]);
  if (code !== 0) throw new Error(`dask run failed (exit ${code}):\n${err.slice(-2000)}`);
  return JSON.parse(out.trim().split("\n").pop()!) as DaskRun;
}

/** CPU seconds (user and system, all threads) a process has used so far, read from /proc. */
function processCpu(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}
/** USER_HZ: /proc counts CPU time in these on Linux. */
const CLOCK_TICKS = 100;

async function timed<T>(run: () => Promise<T> | T): Promise<[seconds: number, value: T]> {
  const started = performance.now();
  const value = await run();
  return [(performance.now() - started) / 1000, value];
}

async function main(): Promise<void> {
  const docs = documents();
  const bytes = docs.reduce((sum, doc) => sum + doc.length, 0);
  const lineCount = docs.reduce((sum, doc) => sum + lines(doc).length, 0);
  console.log(
    `wordcount bench — bun ${Bun.version}, ${navigator.hardwareConcurrency} cores, load ${loadavg()[0]!.toFixed(2)}; ` +
      `${docs.length} documents, ${(bytes / 1e6).toFixed(1)} MB, ${lineCount} lines; ${RUNS} runs of each, alternating`,
  );
  const python = daskPython();
  const withDask = python !== undefined;
  if (python === undefined) {
    console.log(
      `Dask: skipped — none of ${PYTHONS.join(", ")} can import distributed ` +
        "(Debian: apt install python3-distributed)",
    );
  } else console.log(`Dask: ${python}, a LocalCluster of 2 worker processes on 127.0.0.1 started by the bench`);

  // The cluster of Root.local, started here to know its node's pid (for its CPU seconds).
  const cluster = await startLocalCluster({ nodes: 1, workers: 2 });
  await using _cluster = { [Symbol.asyncDispose]: () => cluster.stop() }; // after the root closes
  await using root = new Root(cluster.nodes);
  const node = cluster.processes.find((process) => process.name === "node-0")!.pid;
  const clusterCpu = () => processCpu(process.pid) + processCpu(node);
  const cpus = new Map<string, number[]>();
  const recordCpu = (name: string, seconds: number) => cpus.set(name, [...(cpus.get(name) ?? []), seconds]);
  const times = new Map<string, number[]>();
  const record = (name: string, seconds: number) => times.set(name, [...(times.get(name) ?? []), seconds]);
  let mismatches = 0;
  const check = (name: string, totals: Totals, expected: Totals) => {
    if (!sameTotals(totals, expected)) {
      mismatches++;
      console.log(`  ${name}: totals DIFFER from the plain loop's`);
    }
  };
  await (await plain(root, docs.slice(0, 20)))(); // the nodes warm: package installed and loaded
  const expected = wordCountLoop(docs);
  const doubled = Object.fromEntries(Object.entries(expected).map(([word, count]) => [word, 2 * count]));
  const setups: number[] = [];
  for (let run = 1; run <= RUNS; run++) {
    const [cold, warm] = (await wordCountLoopInFreshThread(2)) as [LoopRun, LoopRun];
    for (const [name, loop] of [
      [LOOP, cold],
      [WARM_LOOP, warm],
    ] as const) {
      record(name, loop.seconds);
      recordCpu(name, loop.cpuSeconds);
      check(name, loop.totals, expected);
    }
    const floor = await wordCountHalvesInFreshProcess();
    record(FLOOR, floor.seconds);
    recordCpu(FLOOR, floor.cpuSeconds);
    check(FLOOR, floor.totals, expected);
    for (const [name, prepare] of [
      [PLAIN, () => plain(root, docs)],
      [COMBINER, () => combined(root, docs, "sum-by-key")],
      ["pcluster 1×2, combine: WordTotals class", () => combined(root, docs, "class")],
    ] as const) {
      const [setupSeconds, go] = await timed(prepare);
      setups.push(setupSeconds);
      const cpuBefore = clusterCpu();
      const [seconds, totals] = await timed(go);
      record(name, seconds);
      recordCpu(name, clusterCpu() - cpuBefore);
      check(name, totals, expected);
      if (name !== COMBINER) continue;
      // Again on the same workers, now warm: the total so far is then twice the loop's.
      const warmCpuBefore = clusterCpu();
      const [warmSeconds, warmTotals] = await timed(go);
      record(WARM_COMBINER, warmSeconds);
      recordCpu(WARM_COMBINER, clusterCpu() - warmCpuBefore);
      check(WARM_COMBINER, warmTotals, doubled);
    }
    if (withDask) {
      const result = await dask(python, docs);
      record("Dask distributed 2 workers, per-item", result.perItem);
      record("Dask distributed 2 workers, fold", result.fold);
      recordCpu("Dask distributed 2 workers, per-item", result.perItemCpu);
      recordCpu("Dask distributed 2 workers, fold", result.foldCpu);
      check("Dask per-item", result.perItemTotals, expected);
      check("Dask fold", result.foldTotals, expected);
    }
    const lastTimes = [...times].map(([name, list]) => `${shortName(name)} ${list.at(-1)!.toFixed(2)} s`);
    console.log(`  run ${run}: ${lastTimes.join(" · ")}`);
  }

  const loopMedian = median(times.get(LOOP)!);
  const rows = [...times].map(([name, list]) => [
    name,
    `${median(list).toFixed(2)} s`,
    `${Math.min(...list).toFixed(2)}–${Math.max(...list).toFixed(2)} s`,
    fmtRatio(median(list) / loopMedian),
    `${median(cpus.get(name)!).toFixed(2)} s`,
  ]);
  const out = ["", table(["word count", "median", "range", "× loop time", "CPU (median)"], rows), ""];
  // Each aim is the median of the same-run ratios (the cases of one run share the machine's load then).
  const sameRun = (numerator: string, denominator: string): number[] => {
    const over = times.get(denominator);
    return (times.get(numerator) ?? []).map((seconds, run) => seconds / (over?.[run] ?? Number.NaN));
  };
  const ratioOfRuns = (ratios: number[]) =>
    `${fmtRatio(median(ratios))} (runs ${fmtRatio(Math.min(...ratios))}–${fmtRatio(Math.max(...ratios))})`;
  const judge = (name: string, ratios: number[], bound: number, atMost: boolean) => {
    const measured = ratios.length > 0 && ratios.every(Number.isFinite);
    // Without Dask its aims are not measured (NaN): printed so, and missed under --check.
    const value = measured ? median(ratios) : Number.NaN;
    const format = (v: number) => (Number.isNaN(v) ? "not measured" : fmtRatio(v));
    const note = measured ? `(runs ${fmtRatio(Math.min(...ratios))}–${fmtRatio(Math.max(...ratios))})` : undefined;
    return judgeAim(name, value, bound, { atMost, format, note }).line;
  };
  out.push(
    `totals: ${mismatches === 0 ? "every case equals the plain loop's, in every run" : `${mismatches} case runs DIFFER`}`,
    `combiner ÷ plain outputs: ${fmtRatio(median(sameRun(COMBINER, PLAIN)))} of the time`,
    `setup of each pcluster case (before its timed run): median ${median(setups).toFixed(2)} s, ` +
      `${Math.min(...setups).toFixed(2)}–${Math.max(...setups).toFixed(2)} s`,
    `warm: "sum-by-key" again on its workers ÷ the warm loop: ${ratioOfRuns(sameRun(WARM_COMBINER, WARM_LOOP))}; ` +
      `the first run ÷ the warm loop: ${ratioOfRuns(sameRun(COMBINER, WARM_LOOP))}`,
    "aims (medians of same-run ratios; the loop in a fresh thread, as cold as the workers of a setup):",
    judge("with a combiner, of the loop's time", sameRun(COMBINER, LOOP), AIM_COMBINER_OF_LOOP, true),
    judge(
      "with a combiner, of Dask's fold time",
      sameRun(COMBINER, "Dask distributed 2 workers, fold"),
      AIM_COMBINER_OF_DASK_FOLD,
      true,
    ),
    judge(
      "without one, times faster than Dask per-item",
      sameRun("Dask distributed 2 workers, per-item", PLAIN),
      AIM_DASK_PER_ITEM_OVER_PLAIN,
      false,
    ),
  );
  // The floor against the aims: where even two threads doing nothing but the count take longer than an
  // aim allows, no cluster can meet it on this machine, and the bench says so beside the verdict.
  const floorOfLoop = median(sameRun(FLOOR, LOOP));
  const floorOfFold = median(sameRun(FLOOR, "Dask distributed 2 workers, fold"));
  out.push(
    `floor (2 threads, only the count): ${ratioOfRuns(sameRun(FLOOR, LOOP))} of the loop's time` +
      (withDask ? `, ${ratioOfRuns(sameRun(FLOOR, "Dask distributed 2 workers, fold"))} of Dask's fold time` : ""),
  );
  for (const [what, floorRatio, bound] of [
    ["the loop's", floorOfLoop, AIM_COMBINER_OF_LOOP],
    ["Dask's fold", floorOfFold, AIM_COMBINER_OF_DASK_FOLD],
  ] as const) {
    if (floorRatio > bound) {
      out.push(
        `  the aim of ${fmtRatio(bound)} ${what} time is below this machine's floor here (${fmtRatio(floorRatio)}): ` +
          "two threads counting and nothing else take longer",
      );
    }
  }
  out.push(
    `(load average now ${loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")})`,
  );
  console.log(out.join("\n"));
  if (mismatches > 0) process.exitCode = 1;
}

await main();
