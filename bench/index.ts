/**
 * Runs the benches: every `bench/*.bench.ts`, or those named on the command line, one after another,
 * each in its own `bun` process so that one bench's JIT state, heap and sockets cannot disturb the next.
 *
 *   bun run bench                    all of them, in name order
 *   bun run bench framing engine     bench/framing.bench.ts, then bench/engine.bench.ts
 *   bun run bench cluster            one by name
 *   bun run bench --check [names]    the same, and exits 1 when a printed aim is not met, naming each
 *
 * The benches: cluster (Root.local end to end against the engine alone and a plain loop), discovery
 * (searchNodes over an empty 127.0.0.0/24, against the same scan in smaller rounds), engine (the
 * node engine against piscina and a loop), framing (codecs and loopback TCP framing), large-items
 * (20 MB of documents fed through Root.local, against a raw socket sending the same bytes), scale (slow
 * items on many nodes, against bare threads doing the same waits), scheduler (the root's batching and
 * window logic with fake nodes, against a plain copy loop), start (Root.local of 16 nodes and setup,
 * against as many bare processes and Worker threads), wordcount (combiners, against a plain loop and
 * Dask).
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AIMS_FILE_ENV, type MissedAim } from "./support/aim.ts";

const BENCH_DIR = import.meta.dir;
const SUFFIX = ".bench.ts";

const available = readdirSync(BENCH_DIR)
  .filter((file) => file.endsWith(SUFFIX))
  .map((file) => file.slice(0, -SUFFIX.length))
  .sort();

/** Accepts `framing`, `framing.bench.ts` and `bench/framing.bench.ts`. */
function benchName(arg: string): string {
  const base = arg.split("/").pop()!;
  return base.endsWith(SUFFIX) ? base.slice(0, -SUFFIX.length) : base.replace(/\.ts$/, "");
}

const args = process.argv.slice(2);
const check = args.includes("--check");
const requested = args.filter((arg) => arg !== "--check").map(benchName);
const unknown = requested.filter((name) => !available.includes(name));
if (unknown.length > 0) {
  console.error(
    `no such bench: ${unknown.join(", ")}. Available: ${available.join(", ") || "none"} (bench/<name>${SUFFIX})`,
  );
  process.exit(2);
}
const selected = requested.length > 0 ? requested : available;

// Each bench appends the aims it missed here (bench/support/aim.ts).
const aimsDir = mkdtempSync(join(tmpdir(), "pcluster-bench-aims-"));
let running: ReturnType<typeof Bun.spawn> | undefined;
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    running?.kill(signal);
    rmSync(aimsDir, { recursive: true, force: true }); // a bench stopped by hand leaves nothing behind
    process.exit(130);
  });
}

const outcomes: string[] = [];
let failed = 0;
const aimsFile = join(aimsDir, "missed.jsonl");
for (const name of selected) {
  console.log(`\n▶ bench/${name}${SUFFIX}\n`);
  const started = performance.now();
  running = Bun.spawn([process.execPath, join(BENCH_DIR, `${name}${SUFFIX}`)], {
    cwd: join(BENCH_DIR, ".."),
    stdio: ["inherit", "inherit", "inherit"],
    env: { ...process.env, [AIMS_FILE_ENV]: aimsFile },
  });
  const code = await running.exited;
  running = undefined;
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  if (code !== 0) failed++;
  outcomes.push(`${code === 0 ? "ok  " : "FAIL"} ${name} (${seconds} s${code === 0 ? "" : `, exit code ${code}`})`);
}

if (selected.length > 1 || failed > 0) console.log(`\n${outcomes.join("\n")}`);
let missed: MissedAim[] = [];
try {
  missed = readFileSync(aimsFile, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((line) => JSON.parse(line) as MissedAim);
} catch {
  // no bench missed an aim: the file was never written
}
rmSync(aimsDir, { recursive: true, force: true });
if (missed.length > 0) {
  console.log(`\naims not met (${missed.length}):`);
  for (const m of missed) {
    // A value that was not measured (NaN) travels as JSON null.
    const value = typeof m.value === "number" ? m.value.toPrecision(3) : "not measured";
    console.log(`  ${m.bench}: ${m.name} — ${value} ${m.atMost ? ">" : "<"} ${m.bound}`);
  }
}
process.exit(failed > 0 || (check && missed.length > 0) ? 1 : 0);
