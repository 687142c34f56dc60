import { dirname } from "node:path";
import { Root } from "../../src/index.ts";
import { startLocalCluster } from "../../src/root/local.ts";
import { runDoubles } from "./forgetful.ts";
import { childrenOf } from "./pids.ts";

/**
 * Starts a local cluster, prints its process ids and work dir, then ends without `stop()`, as
 * `argv[2]` says: "exit" (process.exit), "throw" (an uncaught error) or "signal" (waits for a SIGTERM
 * it does not handle). The local cluster's processes must not outlive it.
 *
 * "forget": a `Root.local` script that runs a pipeline to its end and then simply stops, forgetting
 * `reset()` and `close()` — no exit call, nothing thrown. It must end by itself, taking its processes along.
 *
 * "console": a `Root.local` script whose task prints with console.log and console.error, run on two
 * items; then it stops its cluster and says "DONE".
 */
const mode = process.argv[2] ?? "exit";
if (mode === "console") {
  const { printing } = await import("../fixtures/tasks/index.ts");
  await using cluster = await Root.local({ nodes: 1, workers: 1 });
  await cluster.setup("console", "1", [{ function: printing }], {
    localPackages: [`${import.meta.dir}/../fixtures/tasks`],
  });
  await cluster.run([1, 2]);
  await cluster.reset();
  console.log("DONE");
} else if (mode === "forget") {
  const cluster = await Root.local({ nodes: 1, workers: 1 });
  const outputs = await runDoubles(cluster, "forgetful");
  const sum = outputs.reduce((total, output) => total + output, 0);
  console.log(
    `LOCAL ${JSON.stringify({ pids: childrenOf(process.pid), workdir: dirname(cluster.logFile!), outputs: outputs.length, sum })}`,
  );
} else {
  const cluster = await startLocalCluster({ nodes: 2, workers: 1 });
  console.log(
    `LOCAL ${JSON.stringify({ pids: cluster.processes.map((child) => child.pid), workdir: cluster.workdir })}`,
  );
  if (mode === "exit") process.exit(0);
  if (mode === "throw") throw new Error("local-exit: an uncaught error, on purpose");
  setInterval(() => {}, 60_000); // "signal": wait for the test's SIGTERM
}
