// `bun run test`: the whole suite, several test files at once, the slowest first (test/timings.json
// holds each file's seconds when run alone). Arguments are passed on to `bun test`.
//
// Most files wait on processes, sockets and timers more than they compute: on an idle machine one
// file per core leaves the cores half idle. Twice as many still left 2 cores idle a tenth of the run
// (1.78 busy on average: stretches where all four files waited on timers); five files at once, a
// twentieth (1.86–1.94), and the suite ended 4 s sooner at the median of three. On a machine that is
// already busy (other work keeping about half its cores busy right now), more files at once would
// only give each test a smaller share of the CPU: then one per core.
//
// "Right now" is the CPU time the machine spent busy over the last second (/proc/stat), not the
// 1-minute load average: that one still counts, for a minute, the typecheck and build CI ran just before,
// and made the suite run half as wide on a machine that had gone idle.
//
// The tests get a temp dir of their own (TMPDIR), removed at the end: a run that is interrupted (Ctrl-C,
// a SIGTERM) leaves nothing behind either, though its tests' teardown did not run. What a finished run's
// tests left in it fails the run, by name: every test removes what it made.
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { availableParallelism, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { withNodeAllocator } from "../src/node/allocator.ts";

const cores = availableParallelism();
const busy = await busyCores(1000);
// A job that keeps one of two cores busy shows as a little under one core here: 0.4 of the cores, not 0.5.
const files = busy >= 0.4 * cores ? cores : Math.round(2.5 * cores);
console.error(
  `bun run test: ${files} files at once (${busy.toFixed(1)} of ${cores} cores busy over the last second; ` +
    `1-minute load ${loadavg()[0]!.toFixed(1)})`,
);
const args = ["test", "--timeout", "60000", `--parallel=${files}`, "--timings=test/timings.json"];
const temp = mkdtempSync(join(tmpdir(), "pcluster-test-run-"));
const child = Bun.spawn([process.execPath, ...args, ...process.argv.slice(2)], {
  cwd: `${import.meta.dir}/..`,
  // Every node the tests start runs with this as deployed; given here, they need not restart to get it.
  env: { ...withNodeAllocator(process.env), TMPDIR: temp },
  stdio: ["inherit", "inherit", "inherit"],
});
// Interrupted: the tests stop (their own handlers end their children), and the temp dir goes below.
let signalled: number | undefined;
for (const [signal, code] of Object.entries({ SIGINT: 130, SIGTERM: 143 })) {
  process.on(signal, () => {
    signalled = code;
    child.kill(signal as NodeJS.Signals);
  });
}
let status = await child.exited;
const left = readdirSync(temp);
rmSync(temp, { recursive: true, force: true });
if (signalled !== undefined) process.exit(signalled);
if (left.length > 0) {
  console.error(`bun run test: the tests left ${left.length} entries in their temp dir: ${left.join(", ")}`);
  status ||= 1;
}
process.exit(status);

/**
 * How many cores' worth of CPU time the machine spent busy over the next `ms` (everything but idle and
 * I/O wait, from /proc/stat); the 1-minute load where there is no /proc/stat.
 */
async function busyCores(ms: number): Promise<number> {
  const before = cpuTimes();
  if (before === undefined) return loadavg()[0]!;
  await Bun.sleep(ms);
  const after = cpuTimes()!;
  const total = after.total - before.total;
  return total > 0 ? (cores * (after.busy - before.busy)) / total : 0;
}

function cpuTimes(): { total: number; busy: number } | undefined {
  let line: string;
  try {
    line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!;
  } catch {
    return undefined;
  }
  // cpu  user nice system idle iowait irq softirq steal guest guest_nice (guest time is in user already)
  const [user, nice, system, idle, iowait, irq, softirq, steal] = line.trim().split(/\s+/).slice(1, 9).map(Number);
  const busy = user! + nice! + system! + irq! + softirq! + steal!;
  return { total: busy + idle! + iowait!, busy };
}
