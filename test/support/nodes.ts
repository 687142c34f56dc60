import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { spawnLogServer } from "./log-server.ts";
import { CLI, REPO, type Spawned, killAll, removeWithChildren, spawnBun } from "./processes.ts";

/** Children must not inherit a token from the environment the tests run in. */
export const NO_TOKEN = { PCLUSTER_TOKEN: undefined };

/**
 * consola prints only warnings and errors when NODE_ENV is "test" (which `bun test` sets and children
 * inherit); a deployed node prints its info lines too, and tests check them.
 */
const CONSOLE_AS_DEPLOYED = { CONSOLA_LEVEL: "3" };

export interface NodeOptions {
  /** Log server port (on 127.0.0.1): passed as --log-host/--log-port. */
  logPort?: number;
  workers?: number;
  /** Port on 127.0.0.1 (default: a free one). */
  port?: number;
  /** Default: a fresh temp folder, removed by `killAll()` (see `RunningNode.workdir`). */
  workdir?: string;
  token?: string;
  tls?: { cert: string; key: string };
  maxFrameBytes?: number;
  /** More CLI arguments, after the others. */
  args?: string[];
  /** Environment of the node process (PCLUSTER_TOKEN is cleared unless given here). */
  env?: Record<string, string | undefined>;
  /** Bound on the wait for "listening on" (default 15 s). */
  timeoutMs?: number;
}

export interface RunningNode {
  proc: Spawned;
  port: number;
  /** "127.0.0.1:port" */
  addr: string;
  workdir: string;
}

/** The argument list of `bun src/cli.ts node …` for these options, on 127.0.0.1 and a free port. */
export function nodeArgs(options: NodeOptions & { workdir: string }): string[] {
  const args = [CLI, "node", "--host", "127.0.0.1", "--port", String(options.port ?? 0), "--workdir", options.workdir];
  if (options.logPort !== undefined) args.push("--log-host", "127.0.0.1", "--log-port", String(options.logPort));
  if (options.workers !== undefined) args.push("--workers", String(options.workers));
  if (options.token !== undefined) args.push("--token", options.token);
  if (options.tls !== undefined) args.push("--tls-cert", options.tls.cert, "--tls-key", options.tls.key);
  if (options.maxFrameBytes !== undefined) args.push("--max-frame", String(options.maxFrameBytes));
  return [...args, ...(options.args ?? [])];
}

/**
 * A `pcluster node` process on a free port of 127.0.0.1, once it says where it listens. It is killed
 * by `killAll()` from processes.ts like every other child.
 */
export async function startNode(options: NodeOptions = {}): Promise<RunningNode> {
  // A folder of its own inside a fresh temp folder: the host's install cache goes beside a node's work
  // dir (node/packages.ts), so this keeps it inside what killAll() removes, not in the temp dir itself.
  const workdir = options.workdir ?? join(removeWithChildren(mkdtempSync(join(tmpdir(), "pcluster-node-"))), "node");
  const proc = spawnBun(nodeArgs({ ...options, workdir }), {
    env: { ...NO_TOKEN, ...CONSOLE_AS_DEPLOYED, ...options.env },
  });
  const [, port] = await proc.waitFor(/listening on 127\.0\.0\.1:(\d+)/, options.timeoutMs ?? 15_000);
  return { proc, port: Number(port), addr: `127.0.0.1:${port}`, workdir };
}

/** A `pcluster log` process (see log-server.ts) writing to `outfile`, without an inherited token. */
export async function startLogServer(outfile: string): Promise<{ server: Spawned; port: number; addr: string }> {
  return spawnLogServer(outfile, { env: NO_TOKEN });
}

/** The same as `startLogServer` (an earlier name, which other tests import). */
export const startLogServerAt = startLogServer;

/** Runs `pcluster <args>` to its end (bounded) and returns its exit code and output. */
export async function runCli(
  args: string[],
  options: { env?: Record<string, string | undefined>; timeoutMs?: number } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const proc = spawnBun([CLI, ...args], { env: { ...NO_TOKEN, ...options.env } });
  const code = await proc.waitExit(options.timeoutMs ?? 15_000);
  // The pipes may deliver their last bytes just after the exit is seen (a grandchild could hold them: bounded).
  await Promise.race([proc.drained, Bun.sleep(2000)]);
  return { code, stdout: proc.stdout, stderr: proc.stderr };
}

/**
 * Writes a task package `<project>/<name>/` (files by relative path) the way a user's project holds
 * one: `<project>/node_modules/pcluster` links to this repo, so `import { log } from "pcluster"`
 * resolves on the root too, and the package's own dependencies are installed with `bun install` (the
 * root imports the package to find its exports). node_modules is never shipped. Returns the folder.
 */
export async function writeProjectPackage(
  project: string,
  name: string,
  files: Record<string, string>,
): Promise<string> {
  const link = join(project, "node_modules", "pcluster");
  if (!existsSync(link)) {
    mkdirSync(dirname(link), { recursive: true });
    symlinkSync(REPO, link, "dir");
  }
  const dir = join(project, name);
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), text);
  }
  const manifest =
    files["package.json"] === undefined ? {} : (JSON.parse(files["package.json"]) as { dependencies?: object });
  if (manifest.dependencies !== undefined && Object.keys(manifest.dependencies).length > 0) {
    const install = spawnBun(["install"], { cwd: dir });
    const code = await install.waitExit(60_000);
    if (code !== 0) throw new Error(`bun install in ${dir} failed (${code}):\n${install.output}`);
  }
  return dir;
}

/**
 * A `pcluster node` on exactly `host:port` (another loopback address than 127.0.0.1, say), or
 * undefined when it could not listen there (the port is taken): for tests of discovery.
 */
export async function tryNodeAt(
  host: string,
  port: number,
  workdir: string,
  extra: string[] = [],
): Promise<Spawned | undefined> {
  const args = [CLI, "node", "--host", host, "--port", String(port), "--workers", "1", "--workdir", workdir, ...extra];
  const proc = spawnBun(args, { env: { PCLUSTER_TOKEN: undefined } });
  try {
    await proc.waitFor(/pcluster node listening on /, 15_000);
    return proc;
  } catch {
    proc.kill("SIGKILL");
    await proc.exited;
    return undefined;
  }
}

/** A node test file's teardown: closes its clients, kills every child process, removes its folders. */
export async function tearDown(
  clients: ReadonlyArray<{ close(): void }>,
  folders: ReadonlyArray<string | undefined>,
): Promise<void> {
  for (const client of clients) client.close();
  await killAll();
  for (const folder of folders) if (folder !== undefined) rmSync(folder, { recursive: true, force: true });
}
