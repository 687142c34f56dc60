import type { Subprocess } from "bun";
import { rmSync } from "node:fs";
import { resolve } from "node:path";

/** The repository's root folder. */
export const REPO = resolve(import.meta.dir, "../..");
/** The CLI entry, run directly with `bun` so that the PID we hold is the server's own. */
export const CLI = resolve(REPO, "src/cli.ts");

const running = new Set<Spawned>();
/** Temp folders of this test file's children (their work dirs), removed once the children are gone. */
const childFolders = new Set<string>();

/** A child process whose output is collected, and which a test can wait on line by line. */
export class Spawned {
  stdout = "";
  stderr = "";
  readonly exited: Promise<number>;
  /** Resolves once stdout and stderr are read to their end (after the exit, all output is in). */
  readonly drained: Promise<void>;
  #waiters: Array<() => void> = [];

  constructor(readonly proc: Subprocess<"ignore" | "pipe", "pipe", "pipe">) {
    running.add(this);
    this.drained = Promise.all([
      this.#collect(proc.stdout, (text) => (this.stdout += text)),
      this.#collect(proc.stderr, (text) => (this.stderr += text)),
    ]).then(
      () => {},
      () => {},
    );
    this.exited = proc.exited.then((code) => {
      running.delete(this);
      this.#notify();
      return code;
    });
  }

  get pid(): number {
    return this.proc.pid;
  }

  get output(): string {
    return this.stdout + this.stderr;
  }

  /** Waits (bounded) for stdout or stderr to match, and returns the match. */
  async waitFor(pattern: RegExp, timeoutMs = 15_000): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const match = this.output.match(pattern);
      if (match) return match;
      if (this.proc.exitCode !== null || this.proc.signalCode !== null) {
        throw new Error(`process ${this.pid} exited before printing ${pattern}; output:\n${this.output}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${pattern}; output so far:\n${this.output}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 200));
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** All of stdout, once the process has exited (bounded). */
  async stdoutText(timeoutMs = 60_000): Promise<string> {
    await this.waitExit(timeoutMs);
    return this.stdout;
  }

  /** Waits (bounded) for the process to exit and returns its exit code (or throws on timeout). */
  async waitExit(timeoutMs = 15_000): Promise<number> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`process ${this.pid} did not exit within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Sends a signal to this process (by its PID) if it still runs. */
  kill(signal: NodeJS.Signals = "SIGKILL"): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      try {
        process.kill(this.pid, signal);
      } catch {
        // already gone
      }
    }
  }

  async #collect(stream: ReadableStream<Uint8Array>, append: (text: string) => void): Promise<void> {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      append(decoder.decode(chunk, { stream: true }));
      this.#notify();
    }
  }

  #notify(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }
}

/** Runs `bun <args>` with piped output. */
export function spawnBun(
  args: string[],
  options: { cwd?: string; env?: Record<string, string | undefined> } = {},
): Spawned {
  return new Spawned(
    Bun.spawn([process.execPath, ...args], {
      cwd: options.cwd ?? REPO,
      env: { ...process.env, NO_COLOR: "1", ...options.env },
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
    }),
  );
}

/** A temp folder a child works in: `killAll` removes it once every child is gone. */
export function removeWithChildren(folder: string): string {
  childFolders.add(folder);
  return folder;
}

function removeChildFolders(): void {
  for (const folder of childFolders) rmSync(folder, { recursive: true, force: true });
  childFolders.clear();
}

/**
 * Kills (SIGKILL, by PID) every process this test file started that still runs, then removes the
 * folders they worked in (see `removeWithChildren`).
 */
export async function killAll(): Promise<void> {
  const all = [...running];
  for (const child of all) child.kill("SIGKILL");
  await Promise.all(all.map((child) => child.exited));
  removeChildFolders();
}

process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
  removeChildFolders();
});
// An interrupted run (Ctrl-C, a SIGTERM) ends its children too: exiting runs the handler above.
process.on("SIGINT", () => process.exit(130));
process.on("SIGTERM", () => process.exit(143));

/**
 * Runs `command` (with piped output) as the leader of its own process group, for commands that run the
 * real program as their child (`bunx pcluster …`): `killGroup` then ends the child too.
 */
export function spawnGroup(
  command: string[],
  options: { cwd: string; env?: Record<string, string | undefined> },
): Spawned {
  return new Spawned(
    Bun.spawn(command, {
      cwd: options.cwd,
      env: { ...process.env, NO_COLOR: "1", ...options.env },
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
      detached: true,
    }),
  );
}

/** Whether any process of the group led by `pgid` still exists. */
export function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Ends the process group of a `spawnGroup` child: SIGTERM, then SIGKILL after `graceMs`. */
export async function killGroup(child: Spawned, graceMs = 3000): Promise<void> {
  const signal = (name: NodeJS.Signals) => {
    try {
      process.kill(-child.pid, name);
    } catch {
      // the group is gone
    }
  };
  signal("SIGTERM");
  const deadline = Date.now() + graceMs;
  while (groupAlive(child.pid) && Date.now() < deadline) await Bun.sleep(50);
  signal("SIGKILL");
  await child.waitExit(graceMs).catch(() => {});
}
