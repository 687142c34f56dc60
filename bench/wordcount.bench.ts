/**
 * Word count bench (issue 14): the machine's license and copyright texts (/usr/share/common-licenses and
 * /usr/share/doc/<pkg>/copyright), each split into lines, the words of 3+ letters of each line counted,
 * all totalled — in the same run:
 *   - a plain single-thread Bun loop folding as it goes (the reference: every other total must equal it);
 *   - pcluster, 1 local node × 2 workers: per-line count objects to the root, summed in `outputHandler`;
 *   - pcluster with `combine: "sum-by-key"` (partials folded in the workers, merged on the root), and with
 *     a combiner class doing the same (bench/support/wordcount's WordTotals);
 *   - Dask distributed's per-item and fold versions, 2 worker processes (bench/support/wordcount_dask.py),
 *     where `python3` can import `distributed` (Debian: `apt install python3-distributed`); else one line
 *     says it is skipped.
 * Each case runs RUNS times, alternating; the report gives the median time, the range and the ratios.
 *
 *   bun run bench wordcount
 *   env: PCLUSTER_BENCH_RUNS (3)
 */
import { existsSync, readFileSync, readdirSync, realpathSync, statSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { Root } from "../src/root/root.ts";
import { countWords, lines, WordTotals } from "./support/wordcount/index.ts";
import { fmtRatio, median, table } from "./support/report.ts";

const RUNS = Number(process.env.PCLUSTER_BENCH_RUNS ?? 3);
const PACKAGE = join(import.meta.dir, "support/wordcount");
const DASK_SCRIPT = join(import.meta.dir, "support/wordcount_dask.py");
const AIM_COMBINER_OF_LOOP = 0.8;
const AIM_COMBINER_OF_DASK_FOLD = 0.5;
const AIM_DASK_PER_ITEM_OVER_PLAIN = 3;

type Totals = Record<string, number>;

/** The license and copyright texts, each file once (many copyright files are links to one another). */
function documents(): string[] {
  const paths = new Set<string>();
  const add = (path: string) => {
    try {
      if (statSync(path).isFile()) paths.add(realpathSync(path));
    } catch {
      // a dangling link: not a document
    }
  };
  const licenses = "/usr/share/common-licenses";
  if (existsSync(licenses)) for (const name of readdirSync(licenses)) add(join(licenses, name));
  const docs = "/usr/share/doc";
  if (existsSync(docs)) for (const name of readdirSync(docs)) add(join(docs, name, "copyright"));
  return [...paths].sort().map((path) => readFileSync(path, "latin1"));
}

function loop(docs: string[]): Totals {
  const totals = new Map<string, number>();
  for (const doc of docs) {
    for (const line of lines(doc)) {
      const counts = countWords(line);
      for (const word in counts) totals.set(word, (totals.get(word) ?? 0) + counts[word]!);
    }
  }
  return Object.fromEntries(totals);
}

function sameTotals(a: Totals, b: Totals): boolean {
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  return keys.every((key) => a[key] === b[key]);
}

const chain = [{ function: lines, isGenerator: true }, { function: countWords }] as const;

async function plain(root: Root, docs: string[]): Promise<Totals> {
  const totals = new Map<string, number>();
  await root.setup("wordcount", "plain", chain, {
    localPackages: [PACKAGE],
    outputHandler: (counts) => {
      for (const word in counts) totals.set(word, (totals.get(word) ?? 0) + counts[word]!);
    },
  });
  await root.run(docs);
  return Object.fromEntries(totals);
}

async function combined(root: Root, docs: string[], combine: "sum-by-key" | "class"): Promise<Totals> {
  await root.setup("wordcount", combine, chain, {
    localPackages: [PACKAGE],
    combine: combine === "class" ? { function: WordTotals } : combine,
  });
  return (await root.run(docs)) as Totals;
}

interface DaskRun {
  perItem: number;
  fold: number;
  perItemTotals: Totals;
  foldTotals: Totals;
}

function daskAvailable(): boolean {
  const probe = Bun.spawnSync(["python3", "-c", "import distributed"], { stdout: "ignore", stderr: "ignore" });
  return probe.exitCode === 0;
}

async function dask(docs: string[]): Promise<DaskRun> {
  const child = Bun.spawn(["python3", DASK_SCRIPT, "2"], { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
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
  const withDask = daskAvailable();
  if (!withDask)
    console.log("Dask: skipped — python3 cannot import distributed (Debian: apt install python3-distributed)");

  await using root = await Root.local({ nodes: 1, workers: 2 });
  const times = new Map<string, number[]>();
  const record = (name: string, seconds: number) => times.set(name, [...(times.get(name) ?? []), seconds]);
  let mismatches = 0;
  const check = (name: string, totals: Totals, expected: Totals) => {
    if (!sameTotals(totals, expected)) {
      mismatches++;
      console.log(`  ${name}: totals DIFFER from the plain loop's`);
    }
  };
  await plain(root, docs.slice(0, 20)); // the nodes warm: package installed and loaded
  for (let run = 1; run <= RUNS; run++) {
    const [loopSeconds, expected] = await timed(() => loop(docs));
    record("plain loop (1 thread)", loopSeconds);
    for (const [name, go] of [
      ["pcluster 1×2, per-line outputs summed on the root", () => plain(root, docs)],
      ['pcluster 1×2, combine: "sum-by-key"', () => combined(root, docs, "sum-by-key")],
      ["pcluster 1×2, combine: WordTotals class", () => combined(root, docs, "class")],
    ] as const) {
      const [seconds, totals] = await timed(go);
      record(name, seconds);
      check(name, totals, expected);
    }
    if (withDask) {
      const result = await dask(docs);
      record("Dask distributed 2 workers, per-item", result.perItem);
      record("Dask distributed 2 workers, fold", result.fold);
      check("Dask per-item", result.perItemTotals, expected);
      check("Dask fold", result.foldTotals, expected);
    }
    console.log(
      `  run ${run}: ${[...times].map(([name, list]) => `${name.split(",")[0]}… ${list.at(-1)!.toFixed(2)} s`).join(" · ")}`,
    );
  }

  const loopMedian = median(times.get("plain loop (1 thread)")!);
  const rows = [...times].map(([name, list]) => [
    name,
    `${median(list).toFixed(2)} s`,
    `${Math.min(...list).toFixed(2)}–${Math.max(...list).toFixed(2)} s`,
    fmtRatio(median(list) / loopMedian),
  ]);
  const out = ["", table(["word count", "median", "range", "× loop time"], rows), ""];
  const combinerMedian = median(times.get('pcluster 1×2, combine: "sum-by-key"')!);
  const plainMedian = median(times.get("pcluster 1×2, per-line outputs summed on the root")!);
  const verdict = (met: boolean) => (met ? "met" : "NOT met");
  out.push(
    `totals: ${mismatches === 0 ? "every case equals the plain loop's, in every run" : `${mismatches} case runs DIFFER`}`,
    `combiner ÷ plain outputs: ${fmtRatio(combinerMedian / plainMedian)} of the time`,
    `aim: with a combiner ≤ ${AIM_COMBINER_OF_LOOP}× the loop's time: ${fmtRatio(combinerMedian / loopMedian)} — ` +
      verdict(combinerMedian / loopMedian <= AIM_COMBINER_OF_LOOP),
  );
  if (withDask) {
    const fold = median(times.get("Dask distributed 2 workers, fold")!);
    const perItem = median(times.get("Dask distributed 2 workers, per-item")!);
    out.push(
      `aim: with a combiner ≤ ${AIM_COMBINER_OF_DASK_FOLD}× Dask's fold time: ${fmtRatio(combinerMedian / fold)} — ` +
        verdict(combinerMedian / fold <= AIM_COMBINER_OF_DASK_FOLD),
      `aim: without one ≥ ${AIM_DASK_PER_ITEM_OVER_PLAIN}× faster than Dask per-item: ${fmtRatio(perItem / plainMedian)} — ` +
        verdict(perItem / plainMedian >= AIM_DASK_PER_ITEM_OVER_PLAIN),
    );
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
