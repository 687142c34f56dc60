import type { Subprocess } from "bun";
import { rmSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { availableParallelism, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { PclusterError } from "../errors.ts";
import { EXIT_WITH_PARENT_ENV } from "../lifetime.ts";
import { withNodeAllocator } from "../node/allocator.ts";
import { defaultMemoryLimit } from "../node/engine/memory-limit.ts";

/**
 * The local cluster behind `Root.local()`: a log server and N node servers as real `pcluster`
 * processes on free ports of 127.0.0.1, sharing one temp work dir. The processes are children of this
 * one and never outlive it: `stop()` ends them, and so does this process exiting without `stop()`.
 */

export interface LocalClusterOptions {
  /** Node processes (default 2). */
  nodes?: number;
  /** Worker threads per node (default: cores / nodes, at least 1). */
  workers?: number;
  /**
   * MB of memory each node may use before it ends a runaway worker (`pcluster node --memory-limit`;
   * default: the machine's 80% shared between the nodes, as they share one machine).
   */
  memoryLimitMb?: number;
  /** Shared token the nodes and the log server require (given to them as `PCLUSTER_TOKEN`). */
  token?: string;
  /** Where the log server writes, kept by `stop()` (default `<workdir>/pcluster.log`, removed by `stop()`). */
  logFile?: string;
  /**
   * `false` echoes all of the processes' output, each line prefixed with its process name. Quiet (the
   * default), the nodes keep their notes for the log file, and what their consoles still get — what
   * tasks print with console.log and console.error, and the nodes' warnings — is echoed the same way.
   */
  quiet?: boolean;
}

export interface LocalCluster {
  /** The nodes, as `[host, port]`. */
  nodes: Array<[host: string, port: number]>;
  logAddress: [host: string, port: number];
  logFile: string;
  /** The temp folder holding the nodes' work dirs (and, by default, the log file). */
  workdir: string;
  /** The processes running: "log", then "node-0", "node-1", … (a node that died and was started again has its new pid). */
  processes: ReadonlyArray<{ name: string; pid: number }>;
  /** Ends every process (SIGTERM, then SIGKILL after 3 s) and removes the work dir. Idempotent. */
  stop(): Promise<void>;
}

const CLI = join(import.meta.dir, "..", "cli.ts");
const START_TIMEOUT_MS = 15_000;
const STOP_GRACE_MS = 3000;
const KEPT_LINES = 100;
/** A node that died is started again at most this many times within `RESTART_WINDOW_MS`. */
const MAX_RESTARTS = 5;
const RESTART_WINDOW_MS = 60_000;
const LISTENING = /listening on 127\.0\.0\.1:(\d+)/;

/**
 * Starts a log server and `nodes` node servers on free loopback ports and resolves once all listen.
 * A process that fails to start takes the others down with it, and the error shows its output.
 *
 * @example
 * const cluster = await startLocalCluster({ nodes: 2, workers: 1 });
 * const root = new Root(cluster.nodes);
 * // …
 * await cluster.stop();
 */
export async function startLocalCluster(options: LocalClusterOptions = {}): Promise<LocalCluster> {
  const nodeCount = count(options.nodes, 2, "nodes");
  const workers = count(options.workers, Math.max(1, Math.floor(availableParallelism() / nodeCount)), "workers");
  const memoryLimitMb = count(
    options.memoryLimitMb,
    Math.max(1, Math.floor(defaultMemoryLimit() / nodeCount / 1048576)),
    "memoryLimitMb",
  );
  const workdir = await mkdtemp(join(tmpdir(), "pcluster-local-"));
  liveWorkdirs.add(workdir);
  // The log server runs in the temp folder: a relative path is the caller's, from the caller's directory.
  const logFile = options.logFile === undefined ? join(workdir, "pcluster.log") : resolve(options.logFile);
  // The children stop by themselves once this process is gone, even if it is killed with SIGKILL.
  // The nodes' allocator setting (node/allocator.ts) is given here: they need not restart to get it.
  const env: Record<string, string | undefined> = withNodeAllocator({
    ...process.env,
    NO_COLOR: "1",
    [EXIT_WITH_PARENT_ENV]: String(process.pid),
  });
  if (options.token) env.PCLUSTER_TOKEN = options.token;
  const quiet = options.quiet ?? true;
  const children: LocalProcess[] = [];
  /** `quietEcho`: what of its output is echoed while quiet (otherwise all of it). */
  const spawn = (name: string, args: string[], quietEcho: "output" | "none"): LocalProcess => {
    const echo = quiet ? quietEcho : "all";
    const child = new LocalProcess(name, [process.execPath, CLI, ...args], { cwd: workdir, env, echo });
    children.push(child);
    return child;
  };

  try {
    const logServer = spawn("log", ["log", "--host", "127.0.0.1", "--port", "0", "--outfile", logFile], "none");
    const logPort = await logServer.listeningPort(START_TIMEOUT_MS);
    const nodeArgs = (index: number, port: number) => [
      "node",
      "--host",
      "127.0.0.1",
      "--port",
      String(port),
      "--log-host",
      "127.0.0.1",
      "--log-port",
      String(logPort),
      "--workers",
      String(workers),
      "--memory-limit",
      String(memoryLimitMb),
      "--workdir",
      join(workdir, `node-${index}`),
      // Nobody reads a quiet cluster's consoles: its nodes' notes go to the log server alone.
      ...(quiet ? ["--quiet"] : []),
    ];
    // A quiet node's console still gets what its tasks print (console.log in a task) and its warnings:
    // they show here, where the script runs, as in a node's own terminal or journal. (A quiet log
    // server's lines are the log file's.)
    const spawnNode = (index: number, port: number) => spawn(`node-${index}`, nodeArgs(index, port), "output");
    const nodes = Array.from({ length: nodeCount }, (_, index) => spawnNode(index, 0));
    const nodePorts = await Promise.all(nodes.map((node) => node.listeningPort(START_TIMEOUT_MS)));

    let stopping: Promise<void> | undefined;
    // A node that dies (a task that kills its process, say) is started again on its port, as a
    // supervisor would: the root sets it up again when it is back. A node that keeps dying is let go.
    const restarts = nodes.map(() => [] as number[]);
    const supervise = (index: number): void => {
      const node = nodes[index]!;
      void node.exited.then(async () => {
        if (stopping !== undefined) return;
        const now = Date.now();
        const recent = restarts[index]!.filter((at) => now - at < RESTART_WINDOW_MS);
        if (recent.length >= MAX_RESTARTS) return;
        restarts[index] = [...recent, now];
        const again = spawnNode(index, nodePorts[index]!);
        nodes[index] = again;
        supervise(index);
        await again.listeningPort(START_TIMEOUT_MS).catch(() => again.kill("SIGKILL"));
      });
    };
    for (let index = 0; index < nodes.length; index++) supervise(index);
    return {
      nodes: nodePorts.map((port) => ["127.0.0.1", port]),
      logAddress: ["127.0.0.1", logPort],
      logFile,
      workdir,
      get processes() {
        return [logServer, ...nodes].map((child) => ({ name: child.name, pid: child.pid }));
      },
      stop: () => (stopping ??= stopAll(nodes, logServer, workdir)),
    };
  } catch (error) {
    for (const child of children) child.kill("SIGKILL");
    await Promise.all(children.map((child) => child.exited));
    await removeWorkdir(workdir);
    throw error;
  }
}

/** Nodes first, so that their last lines still reach the log server; all within one grace period. */
async function stopAll(nodes: LocalProcess[], logServer: LocalProcess, workdir: string): Promise<void> {
  const deadline = Date.now() + STOP_GRACE_MS;
  for (const node of nodes) node.kill("SIGTERM");
  await within(Promise.all(nodes.map((node) => node.exited)), STOP_GRACE_MS);
  logServer.kill("SIGTERM");
  await within(logServer.exited, Math.max(500, deadline - Date.now()));
  const all = [...nodes, logServer];
  for (const child of all) child.kill("SIGKILL");
  await Promise.all(all.map((child) => child.exited));
  // Their last lines, to the echo, before stop() resolves.
  await within(Promise.all(all.map((child) => child.drained)), 1000);
  await removeWorkdir(workdir);
}

async function removeWorkdir(workdir: string): Promise<void> {
  await rm(workdir, { recursive: true, force: true, maxRetries: 3 });
  liveWorkdirs.delete(workdir);
}

/** Waits for `promise`, at most `ms`; the timer does not keep the process alive after. */
async function within(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([promise, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}

function count(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < 1)
    throw new TypeError(`${name} must be a positive integer, got ${Bun.inspect(value)}`);
  return value;
}

// ---- one child process ----------------------------------------------------------------------------

/**
 * A `pcluster` child process. Its output is always read (a full pipe would block it) and its last
 * lines are kept for error reports; it is registered so that it dies with this process.
 */
class LocalProcess {
  readonly exited: Promise<number>;
  /** Resolves once both output pipes are read to their end. */
  readonly drained: Promise<unknown>;
  readonly #proc: Subprocess<"ignore", "pipe", "pipe">;
  readonly #lines: string[] = [];
  #onLine: ((line: string) => void) | undefined;

  constructor(
    readonly name: string,
    command: string[],
    /** What of its output is echoed here: every line, all but its "listening on" line, or none. */
    options: { cwd: string; env: Record<string, string | undefined>; echo: "all" | "output" | "none" },
  ) {
    this.#proc = Bun.spawn(command, {
      cwd: options.cwd,
      env: options.env,
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
    });
    // A running child must not keep this process alive: a script that forgets `stop()` (or the Root's
    // `close()`) still ends when its work is done, and the exit handler below takes the children along.
    // While a Root works or waits, its connections keep the process alive.
    this.#proc.unref();
    liveChildren.add(this.#proc.pid);
    updateGuards();
    this.exited = this.#proc.exited.then((code) => {
      liveChildren.delete(this.#proc.pid);
      updateGuards();
      return code;
    });
    const echo = (stream: NodeJS.WriteStream) => {
      if (options.echo === "none") return undefined;
      const all = options.echo === "all";
      return (line: string) => {
        if (all || !LISTENING.test(line)) stream.write(`[${name}] ${line}\n`);
      };
    };
    this.drained = Promise.all([
      this.#read(this.#proc.stdout, echo(process.stdout)),
      this.#read(this.#proc.stderr, echo(process.stderr)),
    ]);
  }

  get pid(): number {
    return this.#proc.pid;
  }

  /** Sends a signal by PID while the process runs. */
  kill(signal: NodeJS.Signals): void {
    if (this.#proc.exitCode !== null || this.#proc.signalCode !== null) return;
    try {
      process.kill(this.#proc.pid, signal);
    } catch {
      // already gone
    }
  }

  /** Resolves with the port of the "listening on 127.0.0.1:PORT" line; rejects on exit or timeout. */
  async listeningPort(timeoutMs: number): Promise<number> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const port = await new Promise<number | string>((resolve) => {
      const seen = this.#lines.map((line) => LISTENING.exec(line)).find((match) => match !== null);
      if (seen) return resolve(Number(seen[1]));
      this.#onLine = (line) => {
        const match = LISTENING.exec(line);
        if (match !== null) resolve(Number(match[1]));
      };
      timer = setTimeout(() => resolve(`did not say it listens within ${timeoutMs} ms`), timeoutMs);
      this.exited.then((code) => resolve(`exited (${this.#proc.signalCode ?? `code ${code}`}) before listening`));
    });
    clearTimeout(timer);
    this.#onLine = undefined;
    if (typeof port === "number") return port;
    // Its last words may still be in the pipes.
    await within(this.drained, 1000);
    throw new PclusterError(
      `local cluster: the ${this.name} process (pid ${this.pid}) ${port}; its output:\n${this.#lines.join("\n") || "(none)"}`,
    );
  }

  async #read(stream: ReadableStream<Uint8Array>, echo: ((line: string) => void) | undefined): Promise<void> {
    const decoder = new TextDecoder();
    let partial = "";
    const take = (line: string): void => {
      this.#lines.push(line);
      if (this.#lines.length > KEPT_LINES) this.#lines.shift();
      echo?.(line);
      this.#onLine?.(line);
    };
    try {
      for await (const chunk of stream) {
        const lines = (partial + decoder.decode(chunk, { stream: true })).split("\n");
        partial = lines.pop()!;
        for (const line of lines) take(line);
      }
    } catch {
      // the pipe broke with the process; what was read is kept
    }
    if (partial !== "") take(partial);
  }
}

// ---- children die with this process -----------------------------------------------------------------

/** PIDs of local cluster processes still running, of every local cluster of this process. */
const liveChildren = new Set<number>();
/** Work dirs of local clusters not stopped yet. */
const liveWorkdirs = new Set<string>();
const GUARDED_SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
let guarded = false;

/** At exit, without `stop()`: the children are killed and their work dirs removed, synchronously. */
function onExit(): void {
  for (const pid of liveChildren) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  for (const workdir of liveWorkdirs) {
    try {
      rmSync(workdir, { recursive: true, force: true });
    } catch {
      // a dying child may still hold it; it is in the temp dir
    }
  }
}

/**
 * A signal whose default action would end this process ends the children first, then this process
 * (the signal raised again without our handler). When the program handles the signal itself, we
 * leave it to do so: the exit handler still runs when it exits.
 */
function onSignal(signal: NodeJS.Signals): void {
  if (process.listeners(signal).some((listener) => listener !== onSignal)) return;
  onExit();
  liveChildren.clear();
  updateGuards();
  process.kill(process.pid, signal);
}

/** Installs the exit and signal handlers while a child runs, and removes them when none does. */
function updateGuards(): void {
  if (liveChildren.size > 0 && !guarded) {
    guarded = true;
    process.on("exit", onExit);
    for (const signal of GUARDED_SIGNALS) process.on(signal, onSignal);
  } else if (liveChildren.size === 0 && guarded) {
    guarded = false;
    process.off("exit", onExit);
    for (const signal of GUARDED_SIGNALS) process.off(signal, onSignal);
  }
}
