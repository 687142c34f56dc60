import { startLocalCluster } from "../../src/root/local.ts";

/**
 * Starts a local cluster, prints its process ids and work dir, then ends without `stop()`, as
 * `argv[2]` says: "exit" (process.exit), "throw" (an uncaught error) or "signal" (waits for a SIGTERM
 * it does not handle). The local cluster's processes must not outlive it.
 */
const mode = process.argv[2] ?? "exit";
const cluster = await startLocalCluster({ nodes: 2, workers: 1 });
console.log(`LOCAL ${JSON.stringify({ pids: cluster.processes.map((child) => child.pid), workdir: cluster.workdir })}`);
if (mode === "exit") process.exit(0);
if (mode === "throw") throw new Error("local-exit: an uncaught error, on purpose");
setInterval(() => {}, 60_000); // "signal": wait for the test's SIGTERM
