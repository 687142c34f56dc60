#!/usr/bin/env bun
import { defineCommand, runMain } from "citty";
import { VERSION } from "./version.ts";

function fail(message: string): never {
  console.error(`pcluster: ${message}`);
  process.exit(2);
}

/** Parses an integer option, or exits with a message naming the option. */
export function intOption(value: string | undefined, name: string, fallback: number): number {
  if (value === undefined || value === "") return fallback;
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 0) fail(`--${name} must be a non-negative integer, got "${value}"`);
  return parsed;
}

function megabytes(value: string, name: string): number {
  const parsed = Number(value);
  if (value === "" || !Number.isInteger(parsed) || parsed <= 0) fail(`--${name} must be a positive whole number of MB, got "${value}"`);
  return parsed * 1024 * 1024;
}

/** Parses an optional option that must be a whole number of at least 1, or exits with a message naming it. */
function positiveOption(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  const parsed = Number(value);
  if (value === "" || !Number.isInteger(parsed) || parsed <= 0) fail(`--${name} must be a positive integer, got "${value}"`);
  return parsed;
}

const log = defineCommand({
  meta: { name: "log", description: "Run a log server that collects lines from roots, nodes and tasks into one file" },
  args: {
    host: { type: "string", description: "Address to listen on", default: "127.0.0.1" },
    port: { type: "string", description: "Port to listen on (0: any free port)", default: "5000" },
    outfile: { type: "string", description: "File the lines are appended to", default: "pcluster.log" },
    overwrite: { type: "boolean", description: "Truncate the file first instead of appending", default: false },
    token: { type: "string", description: "Shared token clients must prove (default: $PCLUSTER_TOKEN)" },
    insecure: { type: "boolean", description: "Allow listening beyond loopback without a token", default: false },
  },
  async run({ args }) {
    const { runLogServer } = await import("./log/server.ts");
    await runLogServer({
      host: args.host,
      port: intOption(args.port, "port", 5000),
      outfile: args.outfile,
      overwrite: args.overwrite,
      token: args.token || process.env.PCLUSTER_TOKEN || undefined,
      insecure: args.insecure,
    });
  },
});

const node = defineCommand({
  meta: { name: "node", description: "Run a node server: receives task code and items, runs them on every core" },
  args: {
    host: { type: "string", description: "Address to listen on", default: "127.0.0.1" },
    port: { type: "string", description: "Port to listen on (0: any free port)", default: "6000" },
    "log-host": { type: "string", description: "Log server host (tasks' log() goes there)" },
    "log-port": { type: "string", description: "Log server port" },
    workers: { type: "string", description: "Worker threads per pipeline (default: the number of cores)" },
    workdir: { type: "string", description: "Where pipelines are installed (default ~/.pcluster/node-<port>)" },
    token: { type: "string", description: "Shared token roots must prove (default: $PCLUSTER_TOKEN)" },
    insecure: { type: "boolean", description: "Allow listening beyond loopback without a token", default: false },
    "tls-cert": { type: "string", description: "PEM certificate file: serve over TLS" },
    "tls-key": { type: "string", description: "PEM private key file for --tls-cert" },
    "max-frame": { type: "string", description: "Largest frame accepted, in bytes (default 67108864)" },
    "ring-bytes": { type: "string", description: "Bytes of each worker's input and output ring (default 1048576)" },
    "max-connections": { type: "string", description: "Connections open at once, at most; more are refused (default 256)" },
    "max-unauthenticated": {
      type: "string",
      description: "Connections still in the handshake at once, at most; more are refused (default 64)",
    },
    "max-handshake-frame": { type: "string", description: "Largest frame accepted before the handshake, in bytes (default 4096)" },
    "memory-limit": {
      type: "string",
      description: "MB the node may use; above it, the worker with the largest heap is ended (default: 80%)",
    },
  },
  async run({ args }) {
    const { runNodeServer } = await import("./node/server.ts");
    const logHost = args["log-host"];
    const logPort = args["log-port"];
    if ((logHost === undefined) !== (logPort === undefined)) fail("--log-host and --log-port go together");
    const cert = args["tls-cert"];
    const key = args["tls-key"];
    if ((cert === undefined) !== (key === undefined)) fail("--tls-cert and --tls-key go together");
    const port = intOption(args.port, "port", 6000);
    await runNodeServer({
      host: args.host,
      port,
      logAddress: logHost === undefined ? undefined : [logHost, intOption(logPort, "log-port", 5000)],
      workers: args.workers === undefined ? undefined : intOption(args.workers, "workers", 0) || undefined,
      workdir: args.workdir,
      token: args.token || process.env.PCLUSTER_TOKEN || undefined,
      insecure: args.insecure,
      tls: cert === undefined ? undefined : { cert: Bun.file(cert!), key: Bun.file(key!) },
      maxFrameBytes: args["max-frame"] === undefined ? undefined : intOption(args["max-frame"], "max-frame", 0),
      ringBytes: args["ring-bytes"] === undefined ? undefined : intOption(args["ring-bytes"], "ring-bytes", 0),
      memoryLimitBytes: args["memory-limit"] === undefined ? undefined : megabytes(args["memory-limit"], "memory-limit"),
      maxConnections: positiveOption(args["max-connections"], "max-connections"),
      maxUnauthenticated: positiveOption(args["max-unauthenticated"], "max-unauthenticated"),
      maxHandshakeFrameBytes: positiveOption(args["max-handshake-frame"], "max-handshake-frame"),
    });
  },
});

const inspectArgs = {
  nodes: { type: "string", description: "Nodes to ask, as host:port,host:port", required: true },
  token: { type: "string", description: "Shared token (default: $PCLUSTER_TOKEN)" },
  json: { type: "boolean", description: "Print JSON instead of a table", default: false },
  tls: { type: "boolean", description: "Connect over TLS, trusting the system's CAs", default: false },
  "tls-ca": { type: "string", description: "Connect over TLS, trusting this PEM certificate (e.g. the node's own)" },
} as const;

/** The connection options `status` and `benchmark` share: token and TLS. */
async function inspectOptions(args: { token?: string; tls?: boolean; "tls-ca"?: string }) {
  const ca = args["tls-ca"];
  let tls: boolean | { ca: string } | undefined = args.tls || undefined;
  if (ca !== undefined) {
    const file = Bun.file(ca);
    if (!(await file.exists())) fail(`--tls-ca: no such file ${ca}`);
    tls = { ca: await file.text() };
  }
  return { token: args.token || process.env.PCLUSTER_TOKEN, tls };
}

function nodeList(value: string): string[] {
  const nodes = value.split(",").map((node) => node.trim()).filter(Boolean);
  if (nodes.length === 0) fail("--nodes names no node; give host:port[,host:port…]");
  return nodes;
}

const status = defineCommand({
  meta: { name: "status", description: "Print each node's status: pipeline, root, cores, workers, idle workers" },
  args: inspectArgs,
  async run({ args }) {
    const { fetchStatuses, formatStatuses } = await import("./root/inspect.ts");
    const reports = await fetchStatuses(nodeList(args.nodes), await inspectOptions(args));
    console.log(args.json ? JSON.stringify(reports, null, 2) : formatStatuses(reports));
    if (reports.some((report) => report.error !== undefined)) process.exitCode = 1;
  },
});

const benchmark = defineCommand({
  meta: { name: "benchmark", description: "Print per-task processed, dropped, errors, total and mean time, merged over nodes" },
  args: inspectArgs,
  async run({ args }) {
    const { fetchStatuses, formatTaskStats, mergeTaskStats } = await import("./root/inspect.ts");
    const reports = await fetchStatuses(nodeList(args.nodes), await inspectOptions(args));
    for (const report of reports) if (report.error) console.error(`${report.address}: unreachable: ${report.error}`);
    const merged = mergeTaskStats(reports.flatMap((report) => (report.status?.pipeline ? [report.status.pipeline.tasks] : [])));
    console.log(args.json ? JSON.stringify(merged, null, 2) : formatTaskStats(merged));
    if (reports.some((report) => report.error !== undefined)) process.exitCode = 1;
  },
});

const main = defineCommand({
  meta: { name: "pcluster", version: VERSION, description: "Run task pipelines on every core of many hosts" },
  subCommands: { log, node, status, benchmark, stats: benchmark },
});

if (import.meta.main) await runMain(main);
