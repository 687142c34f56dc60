import { afterAll, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { Root } from "../../src/index.ts";
import { waitForFile } from "../support/log-server.ts";

/** `Root.local({ logFile })` keeps the log where the user asks; without it, the log goes with the cluster. */

const dir = mkdtempSync(join(tmpdir(), "pcluster-local-log-"));
const saved = process.env.PCLUSTER_TOKEN;
delete process.env.PCLUSTER_TOKEN;

afterAll(() => {
  if (saved !== undefined) process.env.PCLUSTER_TOKEN = saved;
  rmSync(dir, { recursive: true, force: true });
});

test("a log file the user names, even relative to the current directory, is written there and kept", async () => {
  const file = join(dir, "kept.log");
  const cluster = await Root.local({ nodes: 1, workers: 1, logFile: relative(process.cwd(), file) });
  try {
    expect(cluster.logFile).toBe(file);
    await waitForFile(file, (text) => text.includes("listening on 127.0.0.1:"));
  } finally {
    await cluster.close();
  }
  expect(readFileSync(file, "utf8")).toContain("listening on 127.0.0.1:");
}, 30_000);

test("without logFile the log lies in the cluster's temp folder and goes with it", async () => {
  const cluster = await Root.local({ nodes: 1, workers: 1 });
  const file = cluster.logFile!;
  try {
    await waitForFile(file, (text) => text.includes("listening on 127.0.0.1:"));
  } finally {
    await cluster.close();
  }
  expect(existsSync(file)).toBe(false);
}, 30_000);
