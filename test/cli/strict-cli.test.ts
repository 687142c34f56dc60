import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { closest, editDistance } from "../../src/cli/suggest.ts";
import { colorsWanted } from "../../src/cli/program.ts";
import { NO_TOKEN, runCli, startNode } from "../support/nodes.ts";
import { CLI, killAll, spawnBun } from "../support/processes.ts";

/** `pcluster` refuses a user's mistakes with one line and exit code 2, and says what it does once. */

const root = mkdtempSync(join(tmpdir(), "pcluster-strict-cli-"));
const TLS = join(import.meta.dir, "..", "fixtures", "tls");
const ANSI = /\u001b\[/;

afterAll(async () => {
  await killAll();
  rmSync(root, { recursive: true, force: true });
});

/** A user's mistake: exit code 2, nothing on stdout, exactly one line on stderr, no stack trace. */
async function expectRefused(args: string[], message: string): Promise<void> {
  const result = await runCli(args, { env: { NO_COLOR: undefined } });
  const lines = result.stderr.split("\n").filter(Boolean);
  expect({ args, code: result.code, lines }).toEqual({ args, code: 2, lines: [expect.stringContaining(message)] });
  expect(result.stdout).toBe("");
  expect(result.stderr).not.toMatch(/^\s+at |\.ts:\d+/m);
  expect(result.stderr).not.toMatch(ANSI);
}

describe("bad invocations are refused with one line and exit code 2", () => {
  const workdir = () => ["--workdir", join(root, "never")];
  const cases: Array<[string[], string]> = [
    [["node", "--prot", "6005", ...workdir()], "unknown flag --prot; did you mean --port?"],
    [["node", "--wrokers", "2", ...workdir()], "unknown flag --wrokers; did you mean --workers?"],
    [["node", "--frobnicate", ...workdir()], "unknown flag --frobnicate"],
    [["node", "--port", ...workdir()], "--port needs a value: a port from 0 to 65535"],
    [["node", ...workdir(), "--port"], "--port needs a value: a port from 0 to 65535"],
    [["node", "--port=", ...workdir()], "--port needs a value"],
    [["node", "--port", "99999", ...workdir()], '--port must be a port from 0 to 65535, got "99999"'],
    [["node", "--port", "60.5", ...workdir()], '--port must be a port from 0 to 65535, got "60.5"'],
    [
      ["node", "--port", "0", "--host", "no such host!", ...workdir()],
      '--host must be an IP address or a host name, got "no such host!"',
    ],
    [
      ["node", "--port", "0", "--workers", "0", ...workdir()],
      '--workers must be a whole number of at least 1, got "0"',
    ],
    [
      ["node", "--port", "0", "--tls-cert", "/nope.pem", "--tls-key", "/nope.pem", ...workdir()],
      "--tls-cert: no such file /nope.pem",
    ],
    [
      ["node", "--port", "0", "--tls-cert", join(TLS, "cert.pem"), ...workdir()],
      "--tls-cert and --tls-key go together",
    ],
    [["node", "--port", "0", "--log-port", "5000", ...workdir()], "--log-host and --log-port go together"],
    [["node", "--port", "0", "--port", "1", ...workdir()], "--port is given twice"],
    [["node", "--insecure=maybe", ...workdir()], "--insecure is a switch"],
    [["node", "6000", ...workdir()], 'unexpected argument "6000"'],
    [["node", "--stall-exit", "2", ...workdir()], "--stall-exit takes 0 (never) or 5 seconds or more, got 2"],
    [["log", "--outfile", join(root, "never.log"), "--port", "-1"], '--port must be a port from 0 to 65535, got "-1"'],
    [["status", "--nodes", "nonsense"], '--nodes: "nonsense" is not host:port'],
    [["status", "--nodes", ","], "--nodes names no node"],
    [["status"], "--nodes is required"],
    [["benchmark", "--nodes", "127.0.0.1:1", "--tls-ca", "/nope.pem"], "--tls-ca: no such file /nope.pem"],
    [["benchmark", "--nodes", "127.0.0.1:1", "--jsno"], "unknown flag --jsno; did you mean --json?"],
    [["nod", "--port", "0"], 'unknown command "nod"; did you mean node?'],
  ];
  for (const [args, message] of cases) {
    test(
      `pcluster ${args.filter((arg) => !arg.startsWith(root)).join(" ")}`,
      () => expectRefused(args, message),
      20_000,
    );
  }
});

test("a port in use is named and said to be in use, for a node and a log server", async () => {
  const taken = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  try {
    for (const args of [
      ["node", "--port", String(taken.port), "--workdir", join(root, "taken")],
      ["log", "--port", String(taken.port), "--outfile", join(root, "taken.log")],
    ]) {
      const result = await runCli(args);
      expect(result.code).toBe(1);
      expect(result.stderr.split("\n").filter(Boolean)).toEqual([
        expect.stringContaining(`127.0.0.1:${taken.port} is already in use`),
      ]);
      expect(result.stderr).not.toMatch(/^\s+at /m);
      expect(result.stdout).not.toContain("listening on");
    }
  } finally {
    taken.stop(true);
  }
}, 30_000);

test("a node prints its listening line once, and without colours into a pipe", async () => {
  const node = await startNode({ workers: 1, env: { NO_COLOR: undefined } });
  try {
    // A round trip through the node: by its answer, everything it prints at start is printed.
    const status = await runCli(["status", "--nodes", node.addr]);
    expect(status.code).toBe(0);
    // Its pid, to find the process on its host: the node's row names it under "pid".
    const [header, row] = status.stdout.trim().split("\n").slice(-2);
    expect(header!.split(/\s+/).slice(0, 3)).toEqual(["node", "pid", "pipeline"]);
    expect(row!.split(/\s+/).slice(0, 3)).toEqual([node.addr, String(node.proc.pid), "(idle)"]);
    expect(node.proc.output.match(/listening on/g)).toHaveLength(1);
    expect(node.proc.stdout).toContain(`pcluster node listening on ${node.addr} (workers 1, memory limit `);
    expect(node.proc.output).not.toMatch(ANSI);
  } finally {
    node.proc.kill("SIGKILL");
    rmSync(node.workdir, { recursive: true, force: true });
  }
}, 30_000);

test("nodes started with --port 0 and no --workdir each get the work dir of the port they listen on", async () => {
  const home = join(root, "home");
  const start = () =>
    spawnBun([CLI, "node", "--port", "0", "--workers", "1"], { env: { ...NO_TOKEN, HOME: home, CONSOLA_LEVEL: "3" } });
  const [a, b] = [start(), start()];
  const listening = /listening on 127\.0\.0\.1:(\d+) \(.*workdir ([^)]+)\)/;
  const [[, portA, dirA], [, portB, dirB]] = await Promise.all([a.waitFor(listening), b.waitFor(listening)]);
  expect(portA).not.toBe(portB);
  expect(dirA).toBe(join(home, ".pcluster", `node-${portA}`));
  expect(dirB).toBe(join(home, ".pcluster", `node-${portB}`));
  a.kill("SIGKILL");
  b.kill("SIGKILL");
}, 30_000);

test("--help has no colours in a pipe, whether NO_COLOR is set or not", async () => {
  for (const env of [{ NO_COLOR: undefined }, { NO_COLOR: "1" }]) {
    for (const args of [["--help"], ["node", "--help"], ["status", "-h"]]) {
      const result = await runCli(args, { env });
      expect(result.code).toBe(0);
      expect(result.stdout).toContain("USAGE");
      expect(result.stdout).not.toMatch(ANSI);
    }
  }
  const help = await runCli(["node", "--help"]);
  for (const flag of ["--port=<port>", "--tls-cert=<file>", "--memory-limit=<MB>", "default: $PCLUSTER_TOKEN"]) {
    expect(help.stdout).toContain(flag);
  }
}, 30_000);

test("colours for a terminal, unless NO_COLOR, FORCE_COLOR=0 or TERM=dumb; FORCE_COLOR=1 anywhere", () => {
  type Env = { NO_COLOR?: string; FORCE_COLOR?: string; TERM: string };
  const xterm = "xterm-256color";
  const cases: Array<[env: Env, isTTY: boolean, wanted: boolean]> = [
    [{ TERM: xterm }, true, true],
    [{ TERM: xterm }, false, false],
    [{ TERM: "dumb" }, true, false],
    [{ FORCE_COLOR: "0", TERM: xterm }, true, false],
    [{ FORCE_COLOR: "false", TERM: xterm }, true, false],
    [{ FORCE_COLOR: "1", TERM: xterm }, false, true],
    [{ FORCE_COLOR: "1", TERM: "dumb" }, false, true],
    [{ NO_COLOR: "", FORCE_COLOR: "1", TERM: "dumb" }, true, true],
    [{ NO_COLOR: "yes", FORCE_COLOR: "1", TERM: "dumb" }, true, false],
  ];
  const names = ["NO_COLOR", "FORCE_COLOR", "TERM"] as const;
  const saved = names.map((name) => process.env[name]);
  const set = (name: string, value: string | undefined) => {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  };
  try {
    for (const [env, isTTY, wanted] of cases) {
      for (const name of names) set(name, env[name]);
      expect([env, isTTY, colorsWanted({ isTTY })]).toEqual([env, isTTY, wanted]);
    }
  } finally {
    for (const [index, name] of names.entries()) set(name, saved[index]);
  }
});

test("suggestions: a swap, a slip or a missing letter is close; anything else is not", () => {
  const flags = ["host", "port", "workers", "workdir", "token", "tls-cert", "tls-key"];
  expect(editDistance("prot", "port")).toBe(1);
  expect(closest("prot", flags)).toBe("port");
  expect(closest("tokn", flags)).toBe("token");
  expect(closest("tls-kye", flags)).toBe("tls-key");
  expect(closest("wrokdir", flags)).toBe("workdir");
  expect(closest("frobnicate", flags)).toBeUndefined();
  expect(closest("x", flags)).toBeUndefined();
});
