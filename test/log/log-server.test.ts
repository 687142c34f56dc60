import { afterAll, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ProtocolError } from "../../src/errors.ts";
import { dial } from "../../src/protocol/handshake.ts";
import { RECORD, messagesOf, spawnLogServer, waitForFile } from "../support/log-server.ts";
import { CLI, REPO, killAll, spawnBun } from "../support/processes.ts";
import { RawClient } from "../support/raw-client.ts";
import { waitFor } from "../support/wait.ts";

const dir = mkdtempSync(join(tmpdir(), "pcluster-log-server-"));
const WRITER = join(REPO, "test/support/log-writer.ts");
/** Children must not inherit a token from the environment the tests run in. */
const NO_TOKEN = { PCLUSTER_TOKEN: undefined };

afterAll(async () => {
  await killAll();
  rmSync(dir, { recursive: true, force: true });
}, 60_000);

const range = (count: number, tag: string) => Array.from({ length: count }, (_, i) => `${tag} ${i}`);

test("3 processes logging 1000 lines each at once: every line, in order per process, with its own pid", async () => {
  const outfile = join(dir, "many.log");
  const { server, addr } = await spawnLogServer(outfile, { env: NO_TOKEN });
  // The writers exit without closing their log connection: that they exit at all shows it is unref'd.
  const writers = ["a", "b", "c"].map((tag) => spawnBun([WRITER, addr, "1000", "0", tag], { env: NO_TOKEN }));
  expect(await Promise.all(writers.map((writer) => writer.waitExit(15_000)))).toEqual([0, 0, 0]);

  const text = await waitForFile(outfile, (t) => t.split("\n").length > 3000);
  const lines = text.trimEnd().split("\n");
  expect(lines).toHaveLength(3000);
  for (const line of lines) expect(line).toMatch(RECORD);
  for (const [i, tag] of ["a", "b", "c"].entries()) {
    expect(messagesOf(text, writers[i]!.pid)).toEqual(range(1000, tag));
    expect(writers[i]!.stderr).toBe(""); // nothing fell back to stderr
  }
  // Echoed to stdout too, after the one line saying where it listens.
  await server.waitFor(/\] c 999\n/);
  expect(server.stdout.split("\n")[0]).toMatch(
    /^pcluster log server listening on 127\.0\.0\.1:\d+, writing to .*many\.log$/,
  );
}, 60_000);

test("appends across runs by default, truncates with --overwrite, and stops cleanly on SIGTERM", async () => {
  const outfile = join(dir, "runs.log");
  const run = async (tag: string, args: string[] = []) => {
    const { server, addr } = await spawnLogServer(outfile, { args, env: NO_TOKEN });
    expect(await spawnBun([WRITER, addr, "2", "0", tag], { env: NO_TOKEN }).waitExit()).toBe(0);
    await waitForFile(outfile, (text) => text.includes(`] ${tag} 1\n`));
    server.kill("SIGTERM");
    expect(await server.waitExit()).toBe(0);
  };
  // stdin is not a terminal here ("ignore"): a prompt would hang these runs.
  await run("first");
  await run("second");
  expect(await waitForFile(outfile, () => true)).toMatch(/\] first 0\n.*\] first 1\n.*\] second 0\n.*\] second 1\n$/s);
  await run("third", ["--overwrite"]);
  const text = await waitForFile(outfile, () => true);
  expect(text).not.toContain("first");
  expect(text.trimEnd().split("\n")).toHaveLength(2);
}, 60_000);

test("a log file renamed away (logrotate) or removed is followed by a new one at its path; no line is lost", async () => {
  const outfile = join(dir, "rotated.log");
  const { addr } = await spawnLogServer(outfile, { env: NO_TOKEN });
  const logLines = async (tag: string) => {
    const writer = spawnBun([WRITER, addr, "3", "0", tag], { env: NO_TOKEN });
    expect(await writer.waitExit()).toBe(0);
    return writer.pid;
  };
  const before = await logLines("before");
  await waitForFile(outfile, (text) => text.includes("] before 2\n"));
  renameSync(outfile, `${outfile}.1`);
  await waitFor(() => existsSync(outfile), { what: "the log server to make a new file at its path" });
  const after = await logLines("after");
  const text = await waitForFile(outfile, (t) => t.includes("] after 2\n"));
  expect(messagesOf(text, after)).toEqual(range(3, "after"));
  expect(text).not.toContain("before");
  expect(messagesOf(readFileSync(`${outfile}.1`, "utf8"), before)).toEqual(range(3, "before"));

  rmSync(outfile);
  await waitFor(() => existsSync(outfile), { what: "the log server to make the removed file again" });
  const again = await logLines("again");
  expect(messagesOf(await waitForFile(outfile, (t) => t.includes("] again 2\n")), again)).toEqual(range(3, "again"));
}, 60_000);

test("garbage bytes and a non-log message get a clear error while another client keeps logging", async () => {
  const outfile = join(dir, "bad-clients.log");
  const { server, port, addr } = await spawnLogServer(outfile, { env: NO_TOKEN });
  const steady = spawnBun([WRITER, addr, "60", "10", "steady"], { env: NO_TOKEN });

  const garbage = await RawClient.connect(port);
  garbage.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  const garbageError = (await garbage.waitFor((m) => m.t === "err")) as { code: string; message: string };
  expect(garbageError.code).toBe("protocol");
  expect(garbageError.message).toContain("exceeds the maximum");
  await garbage.waitClosed();

  const { connection } = await dial({ hostname: "127.0.0.1", port, service: "log" });
  connection.send({ t: "event", name: "hello?" });
  const reason = await connection.closed;
  expect(reason).toBeInstanceOf(ProtocolError);
  expect(reason!.message).toBe('a log server only takes "log" messages, got "event"');

  expect(await steady.waitExit()).toBe(0);
  const text = await waitForFile(outfile, (t) => t.includes("] steady 59\n"));
  expect(messagesOf(text, steady.pid)).toEqual(range(60, "steady"));
  expect(server.stderr).toContain('it sent a "event" message');
}, 60_000);

test("with --token, a client with PCLUSTER_TOKEN is served and one without is refused, saying why", async () => {
  const outfile = join(dir, "token.log");
  const { server, addr } = await spawnLogServer(outfile, { args: ["--token", "s3cret"], env: NO_TOKEN });
  const trusted = spawnBun([WRITER, addr, "5", "0", "trusted"], { env: { PCLUSTER_TOKEN: "s3cret" } });
  const stranger = spawnBun([WRITER, addr, "5", "0", "stranger"], { env: NO_TOKEN });
  expect(await trusted.waitExit()).toBe(0);
  expect(await stranger.waitExit()).toBe(0);

  const text = await waitForFile(outfile, (t) => t.includes("] trusted 4\n"));
  expect(messagesOf(text, trusted.pid)).toEqual(range(5, "trusted"));
  expect(text).not.toContain("stranger");
  // The stranger learns why, and its lines are not lost: they are on its stderr.
  expect(stranger.stderr).toContain("requires a token");
  expect(stranger.stderr).toContain("] stranger 4\n");
  await server.waitFor(/refused .*requires a token/);
}, 60_000);

test("refuses to listen on 0.0.0.0 without a token or --insecure, and says what to do", async () => {
  const refused = spawnBun([CLI, "log", "--host", "0.0.0.0", "--port", "0", "--outfile", join(dir, "exposed.log")], {
    env: NO_TOKEN,
  });
  expect(await refused.waitExit()).not.toBe(0);
  expect(refused.stdout).not.toContain("listening");
  expect(refused.stderr).toContain("refusing to listen on 0.0.0.0 without a token");
  expect(refused.stderr).toContain("--token");
  expect(refused.stderr).toContain("--insecure");
}, 60_000);
