#!/usr/bin/env bun
import { defineCommand, runMain } from "citty";
import { VERSION } from "./version.ts";

/** Parses an integer option, or exits with a message naming the option. */
export function intOption(value: string | undefined, name: string, fallback: number): number {
  if (value === undefined || value === "") return fallback;
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 0) {
    console.error(`pcluster: --${name} must be a non-negative integer, got "${value}"`);
    process.exit(2);
  }
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

const main = defineCommand({
  meta: { name: "pcluster", version: VERSION, description: "Run task pipelines on every core of many hosts" },
  subCommands: { log },
});

if (import.meta.main) await runMain(main);
