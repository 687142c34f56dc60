#!/usr/bin/env bun
import { command, runProgram } from "./cli/program.ts";
import { UsageError } from "./errors.ts";
import { VERSION } from "./version.ts";

/*
 * The `pcluster` commands. Each declares its flags with a kind (see cli/values.ts); the flags arrive in
 * `run` checked and converted, and a mistake (an unknown flag, a missing or bad value) is refused by
 * cli/flags.ts with one line and exit code 2 before anything starts. A new flag is one line, e.g.
 *   "metrics-port": { type: "port", description: "Serve Prometheus text at /metrics on this port" },
 * and `flags["metrics-port"]` is then a number (or undefined); a new command is one more `command({…})`
 * in `program.commands`. A new kind of value gets its check in cli/values.ts, nowhere else.
 */

const TOKEN = "PCLUSTER_TOKEN";
/** The least `--stall-exit` other than 0 (see node/watchdog.ts). */
const MIN_STALL_EXIT_S = 5;

const log = command({
  description: "Run a log server that collects lines from roots, nodes and tasks into one file",
  flags: {
    host: { type: "host", description: "Address to listen on", default: "127.0.0.1" },
    port: { type: "port", description: "Port to listen on (0: any free port)", default: "5000" },
    outfile: {
      type: "string",
      description: "File the lines are appended to",
      default: "pcluster.log",
      valueHint: "file",
    },
    overwrite: { type: "boolean", description: "Truncate the file first instead of appending", default: false },
    token: { type: "string", description: "Shared token clients must prove", env: TOKEN },
    insecure: { type: "boolean", description: "Allow listening beyond loopback without a token", default: false },
    json: {
      type: "boolean",
      description: "Write JSON lines (time, level, host, pid, pipeline, task, message)",
      default: false,
    },
  },
  async run(flags) {
    const { runLogServer } = await import("./log/server.ts");
    const { json, ...rest } = flags;
    await runLogServer({ ...rest, format: json ? "json" : "text" });
  },
});

const node = command({
  description: "Run a node server: receives task code and items, runs them on every core",
  flags: {
    host: { type: "host", description: "Address to listen on", default: "127.0.0.1" },
    port: { type: "port", description: "Port to listen on (0: any free port)", default: "6000" },
    "log-host": { type: "host", description: "Log server host (tasks' log() goes there)" },
    "log-port": { type: "port", description: "Log server port" },
    workers: { type: "count", description: "Worker threads per pipeline (default: the number of cores)" },
    workdir: {
      type: "string",
      description: "Where pipelines are installed (default ~/.pcluster/node-<port>, the port listened on)",
      valueHint: "dir",
    },
    token: { type: "string", description: "Shared token roots must prove", env: TOKEN },
    insecure: { type: "boolean", description: "Allow listening beyond loopback without a token", default: false },
    "tls-cert": { type: "file", description: "PEM certificate file: serve over TLS" },
    "tls-key": { type: "file", description: "PEM private key file for --tls-cert" },
    "max-frame": {
      type: "integer",
      description: "Largest frame accepted, in bytes (default 67108864)",
      valueHint: "bytes",
    },
    "max-item": {
      type: "integer",
      description:
        "Largest item or output, encoded, in bytes; larger ones travel in parts of frames (default 1073741824)",
      valueHint: "bytes",
    },
    "ring-bytes": {
      type: "integer",
      description: "Bytes of each worker's input and output ring (default 1048576)",
      valueHint: "bytes",
    },
    "memory-limit": {
      type: "megabytes",
      description:
        "MB the node may use; above it, the worker whose own heap holds the most is replaced (default: 80% of memory)",
      valueHint: "MB",
    },
    "max-connections": {
      type: "count",
      description: "Connections open at once, at most; more are refused (default 256)",
    },
    "max-unauthenticated": {
      type: "count",
      description: "Connections still in the handshake at once, at most; more are refused (default 64)",
    },
    "max-handshake-frame": {
      type: "count",
      description: "Largest frame accepted before the handshake, in bytes (default 4096)",
      valueHint: "bytes",
    },
    "orphan-grace": {
      type: "integer",
      description: "Seconds a pipeline outlives its root's connection before it is reset (default 3)",
      valueHint: "s",
    },
    "keep-pipelines": {
      type: "count",
      description:
        "Installed pipelines the host's cache keeps, the most recently used first; older ones no node runs are removed (default 20)",
    },
    "root-timeout": {
      type: "count",
      description:
        "Seconds the root running a pipeline here may send nothing (it pings every 2 s) before it is taken for gone and the pipeline reset (default 60)",
      valueHint: "s",
    },
    "drain-timeout": {
      type: "integer",
      description:
        "On SIGTERM or SIGINT, seconds the items here may take to finish before the node stops; the root sends nothing more meanwhile, and a second signal stops at once (default 10; 0: stop at once)",
      valueHint: "s",
    },
    "stall-exit": {
      type: "integer",
      description:
        "Seconds the node's main thread may not run (a loop that never yields) before the process ends itself, for its supervisor to start it again (default 60; 0: never)",
      valueHint: "s",
    },
    "idle-timeout": {
      type: "count",
      description:
        "Seconds any other connection (status, a root not set up here) may send nothing before it is closed (default 300)",
      valueHint: "s",
    },
    "metrics-port": { type: "port", description: "Serve Prometheus metrics at http://<metrics-host>:<port>/metrics" },
    "metrics-host": { type: "host", description: "Address the metrics listen on (default 127.0.0.1; no auth)" },
    quiet: {
      type: "boolean",
      description: "Print only warnings and errors; notes (setups, resets) go to the log server alone",
      default: false,
    },
  },
  together: [
    ["log-host", "log-port"],
    ["tls-cert", "tls-key"],
  ],
  async run(flags) {
    if (flags["metrics-host"] !== undefined && flags["metrics-port"] === undefined) {
      throw new UsageError("--metrics-host needs --metrics-port");
    }
    const stallExit = flags["stall-exit"];
    if (stallExit !== undefined && stallExit > 0 && stallExit < MIN_STALL_EXIT_S) {
      // The main thread's timer moves the watchdog's count every second: a bound near it ends busy nodes.
      throw new UsageError(`--stall-exit takes 0 (never) or ${MIN_STALL_EXIT_S} seconds or more, got ${stallExit}`);
    }
    // Returns only when the process already runs with the node's allocator setting, or cannot get it.
    await (await import("./node/allocator.ts")).restartWithNodeAllocator();
    const { runNodeServer } = await import("./node/server.ts");
    const cert = flags["tls-cert"];
    const key = flags["tls-key"];
    const logHost = flags["log-host"];
    const logPort = flags["log-port"];
    await runNodeServer({
      host: flags.host,
      port: flags.port,
      logAddress: logHost === undefined || logPort === undefined ? undefined : [logHost, logPort],
      workers: flags.workers,
      workdir: flags.workdir,
      token: flags.token,
      insecure: flags.insecure,
      tls: cert === undefined || key === undefined ? undefined : { cert: Bun.file(cert), key: Bun.file(key) },
      maxFrameBytes: flags["max-frame"],
      maxItemBytes: flags["max-item"],
      ringBytes: flags["ring-bytes"],
      memoryLimitBytes: flags["memory-limit"],
      orphanGraceMs: flags["orphan-grace"] === undefined ? undefined : flags["orphan-grace"] * 1000,
      keepPipelines: flags["keep-pipelines"],
      rootTimeoutMs: flags["root-timeout"] === undefined ? undefined : flags["root-timeout"] * 1000,
      idleTimeoutMs: flags["idle-timeout"] === undefined ? undefined : flags["idle-timeout"] * 1000,
      drainTimeoutMs: flags["drain-timeout"] === undefined ? undefined : flags["drain-timeout"] * 1000,
      stallExitMs: flags["stall-exit"] === undefined ? undefined : flags["stall-exit"] * 1000,
      metricsPort: flags["metrics-port"],
      metricsHost: flags["metrics-host"],
      maxConnections: flags["max-connections"],
      maxUnauthenticated: flags["max-unauthenticated"],
      maxHandshakeFrameBytes: flags["max-handshake-frame"],
      quiet: flags.quiet,
    });
  },
});

/** The flags `status` and `benchmark` share: which nodes, how to reach them, how to print. */
const inspectFlags = {
  nodes: { type: "nodes", description: "Nodes to ask, as host:port,host:port", required: true },
  token: { type: "string", description: "Shared token", env: TOKEN },
  json: { type: "boolean", description: "Print JSON instead of a table", default: false },
  tls: { type: "boolean", description: "Connect over TLS, trusting the system's CAs", default: false },
  "tls-ca": { type: "file", description: "Connect over TLS, trusting this PEM certificate (e.g. the node's own)" },
} as const;

/** The connection options `status` and `benchmark` share: token and TLS. */
async function inspectOptions(flags: { token?: string; tls: boolean; "tls-ca"?: string }) {
  const ca = flags["tls-ca"];
  return { token: flags.token, tls: ca === undefined ? flags.tls || undefined : { ca: await Bun.file(ca).text() } };
}

const status = command({
  description: "Print each node's status: pipeline, root, cores, workers, idle workers",
  flags: inspectFlags,
  async run(flags) {
    const { fetchStatuses, formatStatuses } = await import("./root/inspect.ts");
    const reports = await fetchStatuses(flags.nodes, await inspectOptions(flags));
    console.log(flags.json ? JSON.stringify(reports, null, 2) : formatStatuses(reports));
    if (reports.some((report) => report.error !== undefined)) process.exitCode = 1;
  },
});

const benchmark = command({
  description: "Print per-task processed, dropped, errors, total and mean time, merged over nodes and per worker",
  flags: {
    ...inspectFlags,
    out: {
      type: "string",
      description: "Also save the figures (merged and per worker) as JSON to this file",
      valueHint: "file",
    },
  },
  async run(flags) {
    const { fetchStatuses } = await import("./root/inspect.ts");
    const { benchmarkReport, formatBenchmark } = await import("./root/benchmark-report.ts");
    const reports = await fetchStatuses(flags.nodes, await inspectOptions(flags));
    for (const report of reports) if (report.error) console.error(`${report.address}: unreachable: ${report.error}`);
    const figures = benchmarkReport(reports);
    const out = flags.out;
    if (out !== undefined) {
      try {
        await Bun.write(out, `${JSON.stringify(figures, null, 2)}\n`);
      } catch (error) {
        throw new UsageError(`--out: cannot write ${out}: ${(error as Error).message}`);
      }
    }
    console.log(flags.json ? JSON.stringify(figures.merged, null, 2) : formatBenchmark(figures));
    if (reports.some((report) => report.error !== undefined)) process.exitCode = 1;
  },
});

const dashboard = command({
  description: "Serve a live web page of the nodes: workers, rates, task times, errors",
  flags: {
    nodes: inspectFlags.nodes,
    token: inspectFlags.token,
    tls: inspectFlags.tls,
    "tls-ca": inspectFlags["tls-ca"],
    host: { type: "host", description: "Address the dashboard listens on (not authenticated)", default: "127.0.0.1" },
    port: { type: "port", description: "Port the dashboard listens on (0: any free port)", default: "8787" },
    interval: {
      type: "count",
      description: "Milliseconds between two looks at the nodes (at least 100)",
      default: "1000",
    },
  },
  async run(flags) {
    if (flags.interval < 100) throw new UsageError(`--interval must be at least 100 ms, got ${flags.interval}`);
    const { runDashboard } = await import("./root/dashboard/standalone.ts");
    await runDashboard({
      nodes: flags.nodes,
      host: flags.host,
      port: flags.port,
      intervalMs: flags.interval,
      ...(await inspectOptions(flags)),
    });
  },
});

export const program = {
  name: "pcluster",
  version: VERSION,
  description: "Run task pipelines on every core of many hosts",
  commands: { log, node, status, benchmark, stats: benchmark, dashboard },
};

if (import.meta.main) await runProgram(program, process.argv.slice(2));
