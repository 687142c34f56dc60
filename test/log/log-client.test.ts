import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  closeLogs,
  flushLogs,
  getDefaultLogAddress,
  log,
  sendLogLines,
  setDefaultLogAddress,
  setLogSink,
  setLogToken,
} from "../../src/log/log.ts";
import { serve } from "../../src/protocol/handshake.ts";
import type { LogLine } from "../../src/protocol/messages.ts";
import { messagesOf, spawnLogServer, waitForFile } from "../support/log-server.ts";
import { REPO, killAll, spawnBun } from "../support/processes.ts";
import { waitFor } from "../support/wait.ts";

const dir = mkdtempSync(join(tmpdir(), "pcluster-log-client-"));
const WRITER = join(REPO, "test/support/log-writer.ts");
const NO_TOKEN = { PCLUSTER_TOKEN: undefined };

afterAll(async () => {
  closeLogs();
  await killAll();
  rmSync(dir, { recursive: true, force: true });
});

const range = (count: number, tag: string) => Array.from({ length: count }, (_, i) => `${tag} ${i}`);

/** A port nothing listens on: one the OS just gave out and took back. */
function freePort(): number {
  const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = probe.port;
  probe.stop(true);
  return port;
}

test("log() with an addr and with a default address; objects pretty-printed, continuation lines indented", async () => {
  const outfile = join(dir, "in-process.log");
  const { port, addr } = await spawnLogServer(outfile, { env: NO_TOKEN });
  log("by addr", { addr: ["127.0.0.1", port] });
  setDefaultLogAddress(addr);
  expect(getDefaultLogAddress()).toEqual(["127.0.0.1", port]);
  log({ item: 7, tags: ["a", "b"] });
  log("two\nlines");
  // Forwarded lines (from a worker thread) keep their own time, host and pid.
  sendLogLines([{ ts: Date.UTC(2026, 10, 28, 10, 48, 54, 123), host: "worker-host", pid: 4242, msg: "forwarded" }]);
  await flushLogs();
  setDefaultLogAddress(undefined);

  const text = await waitForFile(outfile, (t) => t.includes("] forwarded\n"));
  expect(messagesOf(text, process.pid)).toEqual(["by addr", "{", "two"]);
  expect(text).toContain(`] {\n    item: 7,\n    tags: [ "a", "b" ],\n  }\n`);
  expect(text).toContain("] two\n  lines\n");
  expect(text).toContain("[2026-11-28T10:48:54.123Z worker-host 4242] forwarded\n");
}, 60_000);

test("lines of one tick go as one message, over one connection shared by two copies of the module", async () => {
  // An in-process log server that counts what it gets: how lines travel is the point here.
  const peers: string[] = [];
  const batches: LogLine[][] = [];
  const server = serve({
    hostname: "127.0.0.1",
    port: 0,
    service: "log",
    onPeer(connection) {
      peers.push(connection.remoteAddress);
      connection.onMessage = (message) => {
        if (message.t === "log") batches.push(message.lines);
      };
    },
  });
  try {
    // A task package may resolve "pcluster" to its own copy of the module.
    const other: typeof import("../../src/log/log.ts") = await import(`${REPO}/src/log/log.ts?second-copy`);
    const addr = `127.0.0.1:${server.port}`;
    for (let i = 0; i < 100; i++) log(`one ${i}`, { addr });
    for (let i = 0; i < 100; i++) other.log(`other ${i}`, { addr });
    await flushLogs();
    await waitFor(() => batches.length, { what: "the first batch", until: (n) => n === 1 });
    expect(batches[0]!.map((line) => line.msg)).toEqual([...range(100, "one"), ...range(100, "other")]);

    log("later", { addr });
    await other.flushLogs();
    await waitFor(() => batches.length, { what: "the second batch", until: (n) => n === 2 });
    expect(peers).toHaveLength(1);
  } finally {
    closeLogs();
    server.stop();
  }
}, 60_000);

test("a sink takes lines batched per tick instead of the network; an explicit addr still goes to that server", async () => {
  const received: string[] = [];
  const server = serve({
    hostname: "127.0.0.1",
    port: 0,
    service: "log",
    onPeer(connection) {
      connection.onMessage = (message) => {
        if (message.t === "log") received.push(...message.lines.map((line) => line.msg));
      };
    },
  });
  const sunk: LogLine[][] = [];
  setLogSink((lines) => sunk.push(lines));
  setDefaultLogAddress(["127.0.0.1", server.port]);
  try {
    log("first");
    log({ second: 2 });
    log("direct", { addr: ["127.0.0.1", server.port] });
    await flushLogs();
    expect(sunk).toHaveLength(1);
    expect(sunk[0]!.map((line) => line.msg)).toEqual(["first", "{\n  second: 2,\n}"]);
    expect(sunk[0]![0]).toMatchObject({ pid: process.pid, host: expect.any(String), ts: expect.any(Number) });
    await waitFor(() => received.length, { what: "a line at the server" });
    expect(received).toEqual(["direct"]);
  } finally {
    setLogSink(undefined);
    setDefaultLogAddress(undefined);
    closeLogs();
    server.stop();
  }
}, 60_000);

test("a malformed address is a TypeError saying what is expected", () => {
  for (const bad of ["nope", "host:99999", "host:", ":5000", "::1:5000"]) {
    expect(() => setDefaultLogAddress(bad)).toThrow(TypeError);
  }
  expect(() => setDefaultLogAddress(["", 5000])).toThrow(/expected "host:port"/);
  expect(() => log("x", { addr: ["127.0.0.1", 0] })).toThrow(TypeError);
  setDefaultLogAddress("[::1]:5000");
  expect(getDefaultLogAddress()).toEqual(["::1", 5000]);
  setDefaultLogAddress(undefined);
  expect(getDefaultLogAddress()).toBeUndefined();
});

test("setLogToken lets this process log to a server started with --token", async () => {
  const outfile = join(dir, "token.log");
  const { addr } = await spawnLogServer(outfile, { args: ["--token", "t0ken"], env: NO_TOKEN });
  setLogToken("t0ken");
  try {
    log("with the token", { addr });
    await flushLogs();
  } finally {
    setLogToken(undefined);
  }
  await waitForFile(outfile, (text) => text.includes("] with the token\n"));
}, 60_000);

test("without any address, log() prints the record on stdout", async () => {
  const writer = spawnBun([WRITER, "-", "3", "0", "plain"], { env: NO_TOKEN });
  expect(await writer.waitExit()).toBe(0);
  expect(messagesOf(writer.stdout, writer.pid)).toEqual(range(3, "plain"));
}, 60_000);

/**
 * Lines held for a log server keep a process alive for at most the linger. With a linger of 2 minutes
 * (`PCLUSTER_LOG_LINGER_MS`), a caller that exits within the test's bound is one that held nothing once
 * its lines went to stderr — whatever the machine's load, where a bound of a few seconds was a guess.
 */
const LONG_LINGER = { ...NO_TOKEN, PCLUSTER_LOG_LINGER_MS: "120000" };

test("a log server that is down: the caller exits normally and promptly, its lines on stderr", async () => {
  const addr = `127.0.0.1:${freePort()}`;
  const burst = spawnBun([WRITER, addr, "1000", "0", "burst"], { env: LONG_LINGER });
  // Spread over time, so lines also meet the backoff between connection attempts.
  const trickle = spawnBun([WRITER, addr, "40", "20", "trickle"], { env: LONG_LINGER });
  expect(await burst.waitExit(40_000)).toBe(0);
  expect(await trickle.waitExit(40_000)).toBe(0);

  expect(messagesOf(burst.stderr, burst.pid)).toEqual(range(1000, "burst"));
  expect(messagesOf(trickle.stderr, trickle.pid)).toEqual(range(40, "trickle"));
  for (const writer of [burst, trickle]) {
    expect(writer.stderr.match(/unavailable/g)).toHaveLength(1); // said once, not per line
    expect(writer.stdout).toContain("logged");
  }
}, 60_000);

test("a log server that accepts but never answers: log() returns at once, the caller exits after a bounded wait", async () => {
  const silent = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  try {
    // The wait is the handshake's bound (3 s), not the linger (2 minutes here, as above).
    const writer = spawnBun([WRITER, `127.0.0.1:${silent.port}`, "100", "0", "hush"], { env: LONG_LINGER });
    expect(await writer.waitExit(40_000)).toBe(0);
    const busyMs = Number(/in ([\d.]+) ms/.exec(writer.stdout)![1]);
    // A call that waited for the silent server would take the handshake's whole bound (3 s); the 100
    // calls together take about a millisecond, and no preemption lasts seconds.
    expect(busyMs).toBeLessThan(3000);
    expect(messagesOf(writer.stderr, writer.pid)).toEqual(range(100, "hush"));
    expect(writer.stderr).toContain(`could not connect to 127.0.0.1:${silent.port} within`);
    expect(writer.stderr).toContain("no pcluster server answered");
  } finally {
    silent.stop(true);
  }
}, 60_000);

test("a log server that stops reading: queued lines stay bounded, the rest go to stderr, the caller exits", async () => {
  const stalled = serve({ hostname: "127.0.0.1", port: 0, service: "log", onPeer: (connection) => connection.pause() });
  try {
    const writer = spawnBun([WRITER, `127.0.0.1:${stalled.port}`, "30000", "0", "x".repeat(1000)], { env: NO_TOKEN });
    expect(await writer.waitExit(10_000)).toBe(0);
    // 10 000 lines may wait for the server; every one beyond that went to stderr at once.
    expect(writer.stderr.split("\n").length).toBeGreaterThanOrEqual(20_000);
  } finally {
    stalled.stop();
  }
}, 60_000);

test("a log server killed mid-run and restarted on the same port: the caller keeps going and reaches the new one", async () => {
  const first = join(dir, "before-kill.log");
  const second = join(dir, "after-restart.log");
  const { server, port, addr } = await spawnLogServer(first, { env: NO_TOKEN });
  const writer = spawnBun([WRITER, addr, "160", "25", "tick"], { env: NO_TOKEN });
  await waitForFile(first, (text) => text.includes("] tick 10\n"));
  server.kill("SIGKILL");
  await server.waitExit();
  // The caller finds the server gone before a new one listens on the port.
  await waitFor(() => writer.stderr, {
    what: "the writer to find the log server unavailable",
    until: (text) => text.includes("unavailable"),
  });
  await spawnLogServer(second, { port, env: NO_TOKEN });

  expect(await writer.waitExit(15_000)).toBe(0);
  expect(writer.stdout).toContain("logged 160 lines");
  const after = messagesOf(await waitForFile(second, (text) => text.includes("] tick 159\n")), writer.pid);
  // Lines from the restart on are all there, in order.
  const firstAfter = Number(after[0]!.split(" ")[1]);
  expect(after).toEqual(range(160, "tick").slice(firstAfter));
  expect(writer.stderr).toContain("unavailable");
  expect(writer.stderr).not.toMatch(/error:|Error:/i);
}, 60_000);
