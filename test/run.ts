// `bun run test`: the whole suite, several test files at once, the slowest first (test/timings.json
// holds each file's seconds when run alone). Arguments are passed on to `bun test`.
//
// Most files wait on processes, sockets and timers more than they compute: on an idle machine one
// file per core leaves the cores half idle, and twice as many keep them busy. On a machine that is
// already busy (a 1-minute load of at least one per core), more files at once would only give each
// test a smaller share of the CPU and slow the heavy ones past their bounds: then one per core.
import { availableParallelism, loadavg } from "node:os";
import { withNodeAllocator } from "../src/node/allocator.ts";

const cores = availableParallelism();
const load = loadavg()[0]!;
const files = load >= cores ? cores : 2 * cores;
console.error(`bun run test: ${files} files at once (1-minute load ${load.toFixed(1)} on ${cores} cores)`);
const args = ["test", "--timeout", "60000", `--parallel=${files}`, "--timings=test/timings.json"];
const child = Bun.spawn([process.execPath, ...args, ...process.argv.slice(2)], {
  cwd: `${import.meta.dir}/..`,
  // Every node the tests start runs with this as deployed; given here, they need not restart to get it.
  env: withNodeAllocator(process.env),
  stdio: ["inherit", "inherit", "inherit"],
});
process.exit(await child.exited);
