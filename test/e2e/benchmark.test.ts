import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Root, type TaskStats } from "../../src/index.ts";
import { ProtocolError } from "../../src/errors.ts";
import { type NodeStatus, parseNodeStatus } from "../../src/protocol/pipeline.ts";
import { type BenchmarkReport, benchmarkReport, formatBenchmark } from "../../src/root/benchmark-report.ts";
import * as tasks from "../fixtures/tasks/index.ts";
import { type RunningNode, runCli, startNode, tearDown } from "../support/nodes.ts";
import { REPO } from "../support/processes.ts";

/**
 * The original's benchmark, kept: per-worker and merged figures with the worker count, from real
 * nodes after a real run; `cluster.stats()` readable once the work is done.
 */

const TASKS = join(REPO, "test/fixtures/tasks");
let nodes: RunningNode[];
let cluster: Root;
let folder: string;

beforeAll(async () => {
  folder = mkdtempSync(join(tmpdir(), "pcluster-benchmark-"));
  nodes = await Promise.all([startNode({ workers: 2 }), startNode({ workers: 1 })]);
  cluster = new Root(nodes.map((node) => node.addr));
  await cluster.setup("bench", "2.1", [{ function: tasks.failOnThirteen }, { function: tasks.double }], {
    localPackages: [TASKS],
    errorHandler: () => {},
  });
}, 30_000);

afterAll(async () => {
  await cluster?.close();
  await tearDown([], [folder, ...(nodes ?? []).map((node) => node.workdir)]);
});

const byName = (stats: TaskStats[]) => Object.fromEntries(stats.map((task) => [task.task, task]));

describe("cluster.stats() after the work is done", () => {
  test("after waitEmpty(), after run() and after a process() loop: the counts of everything run so far", async () => {
    cluster.feed(...Array.from({ length: 100 }, (_, n) => n));
    await cluster.waitEmpty();
    let stats = byName(await cluster.stats());
    expect(stats.failOnThirteen).toMatchObject({ processed: 99, errors: 1, dropped: 0 });
    expect(stats.double).toMatchObject({ processed: 99, errors: 0 });

    await cluster.run(Array.from({ length: 200 }, (_, n) => n + 100)); // no 13 among them
    stats = byName(await cluster.stats());
    expect(stats.failOnThirteen).toMatchObject({ processed: 299, errors: 1 });
    expect(stats.double).toMatchObject({ processed: 299 });

    let outputs = 0;
    for await (const _ of cluster.process([1, 2, 3])) outputs++;
    expect(outputs).toBe(3);
    stats = byName(await cluster.stats());
    expect(stats.failOnThirteen).toMatchObject({ processed: 302, errors: 1 });
    expect(stats.double!.totalMs).toBeGreaterThan(0);
    expect(stats.double!.meanMs).toBeCloseTo(stats.double!.totalMs / 302, 6);
  }, 30_000);
});

describe("pcluster benchmark", () => {
  test("a line per worker and task, the merged lines, the worker count; --out saves the same figures", async () => {
    const out = join(folder, "run.json");
    const addrs = nodes.map((node) => node.addr).join(",");
    const result = await runCli(["benchmark", "--nodes", addrs, "--out", out]);
    expect(result.code, result.stderr).toBe(0);
    const text = result.stdout;

    // The merged table comes first, as it always did, then the worker count.
    const lines = text.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^task\s+processed\s+dropped\s+errors\s+total ms\s+mean ms$/);
    expect(
      lines[1]!
        .trim()
        .split(/\s{2,}/)
        .slice(0, 4),
    ).toEqual(["failOnThirteen", "302", "0", "1"]);
    expect(
      lines[2]!
        .trim()
        .split(/\s{2,}/)
        .slice(0, 4),
    ).toEqual(["double", "302", "0", "0"]);
    expect(lines[3]).toBe('merged over 3 workers on 2 nodes ("bench" 2.1)');

    // Per worker: node, worker index, task and its figures; 2 + 1 workers, 2 tasks each.
    const header = lines.indexOf("per worker:");
    expect(header).toBeGreaterThan(3);
    expect(lines[header + 1]).toMatch(/^node\s+worker\s+task\s+processed\s+dropped\s+errors\s+total ms\s+mean ms$/);
    const rows = lines.slice(header + 2).map((line) => line.trim().split(/\s{2,}/));
    expect(rows.map((row) => `${row[0]} ${row[1]} ${row[2]}`)).toEqual([
      `${nodes[0]!.addr} 0 failOnThirteen`,
      `${nodes[0]!.addr} 0 double`,
      `${nodes[0]!.addr} 1 failOnThirteen`,
      `${nodes[0]!.addr} 1 double`,
      `${nodes[1]!.addr} 0 failOnThirteen`,
      `${nodes[1]!.addr} 0 double`,
    ]);
    const sum = (task: string, column: number) =>
      rows.filter((row) => row[2] === task).reduce((total, row) => total + Number(row[column]), 0);
    expect(sum("failOnThirteen", 3)).toBe(302);
    expect(sum("failOnThirteen", 5)).toBe(1);
    expect(sum("double", 3)).toBe(302);

    // The JSON file: the same numbers, merged equal to the sum over workers.
    const report = JSON.parse(readFileSync(out, "utf8")) as BenchmarkReport;
    expect(report.workers).toBe(3);
    expect(Number.isNaN(Date.parse(report.at))).toBe(false);
    expect(report.nodes).toEqual([
      { address: nodes[0]!.addr, pipeline: { name: "bench", version: "2.1", workers: 2 } },
      { address: nodes[1]!.addr, pipeline: { name: "bench", version: "2.1", workers: 1 } },
    ]);
    expect(report.perWorker.map((figures) => [figures.node, figures.worker])).toEqual([
      [nodes[0]!.addr, 0],
      [nodes[0]!.addr, 1],
      [nodes[1]!.addr, 0],
    ]);
    const merged = byName(report.merged);
    expect(merged.failOnThirteen).toMatchObject({ processed: 302, errors: 1, dropped: 0 });
    expect(merged.double).toMatchObject({ processed: 302, errors: 0 });
    for (const [stage, task] of report.merged.entries()) {
      const workers = report.perWorker.map((figures) => figures.tasks[stage]!);
      expect(workers.every((figures) => figures.task === task.task)).toBe(true);
      expect(workers.reduce((total, figures) => total + figures.processed, 0)).toBe(task.processed);
      expect(workers.reduce((total, figures) => total + figures.totalMs, 0)).toBeCloseTo(task.totalMs, 6);
    }
    expect(report.merged).toEqual(await cluster.stats()); // the root's merged figures are the CLI's
    // The table rounds to 3 decimals; the file keeps every digit.
    expect(Number(lines[2]!.trim().split(/\s{2,}/)[4])).toBeCloseTo(merged.double!.totalMs, 2);
  }, 30_000);

  test("--out to a path that cannot be written: one line naming it, exit code 2", async () => {
    const result = await runCli(["benchmark", "--nodes", nodes[0]!.addr, "--out", folder]); // a folder, not a file
    expect(result.code).toBe(2);
    expect(result.stderr).toStartWith(`pcluster benchmark: --out: cannot write ${folder}: `);
    expect(result.stderr).not.toContain("    at ");
  }, 30_000);
});

describe("benchmark pieces", () => {
  const task = (name: string, processed: number, totalMs: number) => ({
    task: name,
    processed,
    dropped: 0,
    errors: 0,
    totalMs,
    meanMs: totalMs / processed,
  });
  const status = (pipeline: Partial<NonNullable<NodeStatus["pipeline"]>> | null): unknown => ({
    host: "h",
    listen: "127.0.0.1:1",
    version: "0.1.0",
    cores: 2,
    workers: 2,
    memory: { used: 1, limit: Infinity },
    pipeline: pipeline && {
      name: "p",
      version: "1",
      owner: "r",
      busy: false,
      startedAt: 1,
      workers: 2,
      idleWorkers: 2,
      awake: true,
      inFlight: 0,
      workersReplaced: 0,
      tasks: [task("t", 10, 5)],
      ...pipeline,
    },
  });

  test("a status reply is validated: a node of before 0.2 (no tasksByWorker) passes, a malformed one is named", () => {
    expect(parseNodeStatus(status({})).pipeline!.tasksByWorker).toBeUndefined();
    expect(parseNodeStatus(status(null)).pipeline).toBeNull();
    expect(parseNodeStatus(status({})).pipeline!.lagMs).toBeUndefined(); // a node of before the lag
    expect(parseNodeStatus(status({ lagMs: 2.5 })).pipeline!.lagMs).toBe(2.5);
    expect(() => parseNodeStatus(status({ lagMs: "late" as unknown as number }))).toThrow(
      'answer to "status": field "pipeline.lagMs" must be a number, got "late"',
    );
    const six = { ...task("t", 6, 3), processed: "six" as unknown as number };
    const bad = status({ tasksByWorker: [[task("t", 4, 2)], [six]] });
    expect(() => parseNodeStatus(bad)).toThrow(ProtocolError);
    expect(() => parseNodeStatus(bad)).toThrow(
      'answer to "status": field "pipeline.tasksByWorker[1][0].processed" must be a number, got "six"',
    );
  });

  test("nodes without per-worker figures still count their workers; idle and unreachable nodes are listed", () => {
    const report = benchmarkReport(
      [
        { address: "a:1", status: parseNodeStatus(status({ tasksByWorker: [[task("t", 4, 2)], [task("t", 6, 3)]] })) },
        { address: "b:1", status: parseNodeStatus(status({ workers: 3 })) }, // an older node
        { address: "c:1", status: parseNodeStatus(status(null)) },
        { address: "d:1", error: "connection refused" },
      ],
      new Date(Date.UTC(2026, 0, 1)),
    );
    expect(report.workers).toBe(5);
    expect(report.at).toBe("2026-01-01T00:00:00.000Z");
    expect(report.perWorker.map((figures) => [figures.node, figures.worker])).toEqual([
      ["a:1", 0],
      ["a:1", 1],
    ]);
    const shown = report.nodes.map((node) => node.error ?? node.pipeline?.workers ?? null);
    expect(shown).toEqual([2, 3, null, "connection refused"]);
    expect(report.merged).toEqual([{ ...task("t", 20, 10), meanMs: 0.5 }]);
    expect(formatBenchmark(report)).toContain('merged over 5 workers on 2 nodes ("p" 1)');
  });
});
