import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { ProtocolError } from "../../src/errors.ts";
import { Root, log } from "../../src/index.ts";
import { setLogSink } from "../../src/log/log.ts";
import { formatLogJson, formatLogLine } from "../../src/log/format.ts";
import { dial } from "../../src/protocol/handshake.ts";
import type { LogLine } from "../../src/protocol/messages.ts";
import * as logging from "../fixtures/logging-tasks/index.ts";
import * as tasks from "../fixtures/tasks/index.ts";
import { spawnLogServer, waitForFile } from "../support/log-server.ts";
import { type RunningNode, startNode } from "../support/nodes.ts";
import { REPO, type Spawned, killAll } from "../support/processes.ts";

/** `pcluster log --json`, log levels, and the pipeline and task on the lines that tasks log. */

const TASKS = join(REPO, "test/fixtures/tasks");
const LOGGING_TASKS = join(REPO, "test/fixtures/logging-tasks");
const NO_TOKEN = { PCLUSTER_TOKEN: undefined };
const dir = mkdtempSync(join(tmpdir(), "pcluster-structured-"));

interface JsonRecord {
  time: string;
  level: string;
  host: string;
  pid: number;
  pipeline: string | null;
  task: string | null;
  message: string;
}

const parseAll = (text: string): JsonRecord[] =>
  text
    .trimEnd()
    .split("\n")
    .map((line) => JSON.parse(line) as JsonRecord);

let jsonServer: { server: Spawned; port: number; outfile: string };
let node: RunningNode;

beforeAll(async () => {
  const outfile = join(dir, "cluster.jsonl");
  const { server, port } = await spawnLogServer(outfile, { args: ["--json"], env: NO_TOKEN });
  jsonServer = { server, port, outfile };
  node = await startNode({ logPort: port, workers: 1 });
}, 30_000);

afterAll(async () => {
  await killAll();
  rmSync(dir, { recursive: true, force: true });
  if (node !== undefined) rmSync(node.workdir, { recursive: true, force: true });
}, 20_000);

describe("pcluster log --json with a real node", () => {
  test("a task's log.warn (and each level) is a JSON line naming level, host, pid, pipeline and task", async () => {
    const cluster = new Root([node.addr]);
    try {
      const chain = [{ function: logging.countTo, isGenerator: true }, { function: logging.logLevels }];
      await cluster.setup("structured", "1", chain, { localPackages: [LOGGING_TASKS] });
      cluster.feed(2);
      await cluster.waitEmpty();
    } finally {
      await cluster.close();
    }
    const text = await waitForFile(jsonServer.outfile, (t) => t.includes('"error 1"') && t.includes("counting 1 of 2"));
    const records = parseAll(text); // every line of the file is one JSON object
    for (const record of records) {
      expect(Object.keys(record)).toEqual(["time", "level", "host", "pid", "pipeline", "task", "message"]);
      expect(new Date(record.time).toISOString()).toBe(record.time);
      expect(record.host).toBe(hostname());
      expect(record.pid).toBe(node.proc.pid); // worker threads log with their node's pid
    }
    const byMessage = (message: string) => records.find((record) => record.message === message);
    expect(byMessage("warn 0")).toMatchObject({ level: "warn", pipeline: "structured", task: "logLevels" });
    expect(byMessage("error 1")).toMatchObject({ level: "error", pipeline: "structured", task: "logLevels" });
    expect(byMessage("plain 0")).toMatchObject({ level: "info", pipeline: "structured", task: "logLevels" });
    expect(byMessage("info 1")).toMatchObject({ level: "info", pipeline: "structured", task: "logLevels" });
    // The generator logs again after its first output ran through logLevels: still named as itself.
    expect(byMessage("counting 0 of 2")).toMatchObject({ level: "info", task: "countTo" });
    expect(byMessage("counting 1 of 2")).toMatchObject({ level: "info", task: "countTo" });
    // The node's own notes: the pipeline they are about, no task.
    const ready = records.find((record) => record.message.startsWith(`[node ${node.addr}] "structured" 1 ready`));
    expect(ready).toMatchObject({ level: "info", pipeline: "structured", task: null });
    // stdout gets the same JSON lines.
    await jsonServer.server.waitFor(/"message":"error 1"/);
  }, 30_000);

  test("a task error is logged at warn, naming its task; lines from senders without levels are info", async () => {
    const cluster = new Root([node.addr]);
    try {
      const options = { localPackages: [TASKS], errorHandler: () => {} };
      await cluster.setup("unlucky", "1", [{ function: tasks.failOnThirteen }], options);
      cluster.feed(13);
      await cluster.waitEmpty();
    } finally {
      await cluster.close();
    }
    // A client of before 0.2: ts, host, pid and msg only.
    const { connection } = await dial({ hostname: "127.0.0.1", port: jsonServer.port, service: "log" });
    const old = { ts: Date.UTC(2026, 0, 2), host: "old-host", pid: 7, msg: "from an older sender" };
    connection.send({ t: "log", lines: [old] });
    const arrived = (t: string) => t.includes("from an older sender") && t.includes("thirteen is unlucky");
    const text = await waitForFile(jsonServer.outfile, arrived);
    connection.close();
    const records = parseAll(text);
    expect(records.find((record) => record.message === "from an older sender")).toEqual({
      time: "2026-01-02T00:00:00.000Z",
      level: "info",
      host: "old-host",
      pid: 7,
      pipeline: null,
      task: null,
      message: "from an older sender",
    });
    const dropped = records.find((record) => record.message.includes('task "failOnThirteen" dropped item'));
    expect(dropped).toMatchObject({ level: "warn", pipeline: "unlucky", task: "failOnThirteen" });
    expect(dropped!.message).toContain("thirteen is unlucky");
  }, 30_000);

  test("lines a task logged reach the log server even when its root resets right after the item is done", async () => {
    const cluster = new Root([node.addr]);
    const outputs: unknown[] = [];
    try {
      await cluster.setup("abrupt", "1", [{ function: logging.logThenBlock }], {
        localPackages: [LOGGING_TASKS],
        outputHandler: (output) => void outputs.push(output),
      });
      // The first item is done (its output is out) while the worker blocks on the second, never idle.
      cluster.feed({ id: 1, ms: 2 }, { id: 2, ms: 20_000 });
      for (const deadline = Date.now() + 10_000; outputs.length === 0 && Date.now() < deadline; ) await Bun.sleep(5);
      expect(outputs).toEqual([{ id: 1 }]);
      await cluster.reset(); // ends the blocked worker
    } finally {
      await cluster.close();
    }
    const text = await waitForFile(jsonServer.outfile, (t) => t.includes("blocking 2 ms for 1"), 5000);
    const line = parseAll(text).find((record) => record.message === "blocking 2 ms for 1");
    expect(line).toMatchObject({ level: "info", pipeline: "abrupt", task: "logThenBlock" });
  }, 30_000);

  test("a line with a level that does not exist is refused, naming the field; the server goes on", async () => {
    const { connection } = await dial({ hostname: "127.0.0.1", port: jsonServer.port, service: "log" });
    // @ts-expect-error a level the protocol does not have, as a foreign or broken client might send
    connection.send({ t: "log", lines: [{ ts: 1, host: "h", pid: 1, msg: "m", level: "fatal" }] });
    const reason = await connection.closed;
    expect(reason).toBeInstanceOf(ProtocolError);
    expect(reason!.message).toBe(
      'message "log": field "lines[0].level" must be one of "info", "warn", "error", got "fatal"',
    );
    expect(jsonServer.server.proc.exitCode).toBeNull();
  }, 10_000);
});

describe("levels in this process", () => {
  test("log() is log.info(): no level on the wire; log.warn and log.error carry theirs", async () => {
    const sunk: LogLine[] = [];
    setLogSink((lines) => sunk.push(...lines));
    try {
      log("a");
      log.info("b");
      log.warn("c");
      log.error({ d: 1 });
      await new Promise((resolve) => setImmediate(resolve)); // the sink takes this tick's lines on the next
    } finally {
      setLogSink(undefined);
    }
    expect(sunk.map((line) => [line.msg, line.level])).toEqual([
      ["a", undefined],
      ["b", undefined],
      ["c", "warn"],
      ["{\n  d: 1,\n}", "error"],
    ]);
  });

  test("the text format shows the level only when it is not info; JSON always has every key", () => {
    const base = { ts: Date.UTC(2026, 5, 1, 12), host: "h 1", pid: 42, msg: "two\nlines" };
    expect(formatLogLine(base)).toBe("[2026-06-01T12:00:00.000Z h_1 42] two\n  lines\n");
    expect(formatLogLine({ ...base, level: "info" })).toBe("[2026-06-01T12:00:00.000Z h_1 42] two\n  lines\n");
    expect(formatLogLine({ ...base, level: "warn" })).toBe("[2026-06-01T12:00:00.000Z h_1 42] WARN two\n  lines\n");
    const error = formatLogLine({ ...base, level: "error", task: "t" });
    expect(error).toBe("[2026-06-01T12:00:00.000Z h_1 42] ERROR two\n  lines\n");
    expect(JSON.parse(formatLogJson({ ...base, level: "warn", pipeline: "p", task: "t" }))).toEqual({
      time: "2026-06-01T12:00:00.000Z",
      level: "warn",
      host: "h 1",
      pid: 42,
      pipeline: "p",
      task: "t",
      message: "two\nlines",
    });
    expect(formatLogJson(base).endsWith("}\n")).toBe(true);
    expect(formatLogJson(base).split("\n")).toHaveLength(2); // one line, however many the message has
  });
});
