/**
 * Processes that tasks start — a converter, a download tool, a shell — end with what started them: with
 * the worker, when the node ends it (the task timeout, the memory limit), and with the pipeline, when it
 * is reset or the node stops. Left alone they would outlive all of it: a task stuck on a child that
 * hangs would leave that child running after its worker was ended, once per item, and a node left
 * running for months would gather them.
 *
 * Linux keeps, per thread, the processes it started (`/proc/<pid>/task/<tid>/children`), so a worker's
 * own are told apart from anything else of the process. Elsewhere nothing is found and nothing is ended.
 */
import { readFileSync, readdirSync } from "node:fs";
import { openLibc } from "./libc.ts";

/** How long a process has to end after SIGTERM before it is sent SIGKILL. */
export const END_GRACE_MS = 2000;
const POLL_MS = 50;

/** A process, and when it started (ticks since boot): a pid reused meanwhile is not the same process. */
interface Started {
  pid: number;
  startedAt: string;
  /** Whether it is a child of this process, which must reap it once it has ended. */
  child: boolean;
}

/** The processes that thread `tid` of this process started, and all theirs. */
export function startedByThread(tid: number): Started[] {
  return withDescendants(childList(`/proc/self/task/${tid}/children`));
}

/** Every process this process started, and all theirs. */
export function startedByThisProcess(): Started[] {
  return withDescendants(childrenOf(process.pid));
}

/**
 * Ends the processes: SIGTERM at once, SIGKILL to those still there after `graceMs`. Resolves when
 * every one is gone (or was sent SIGKILL).
 */
export async function endProcesses(processes: readonly Started[], graceMs = END_GRACE_MS): Promise<void> {
  let left = processes.filter((started) => signal(started, "SIGTERM"));
  for (const deadline = performance.now() + graceMs; left.length > 0 && performance.now() < deadline; ) {
    await Bun.sleep(POLL_MS);
    left = left.filter(isRunning);
  }
  for (const started of left) signal(started, "SIGKILL");
  await reap(processes.filter((started) => started.child).map((started) => started.pid));
}

type WaitpidLibc = { waitpid(pid: number, status: null, options: number): number };
/** The C library's `waitpid`, opened once, at the first reaping. */
let waitpidLibc: Promise<WaitpidLibc | undefined> | undefined;

/**
 * Collects the exit of our own children among them. The thread that started them would have, but it is
 * gone (an ended worker's event loop is); left alone, each would stay a zombie for the node's lifetime.
 */
async function reap(children: number[]): Promise<void> {
  if (children.length === 0) return;
  waitpidLibc ??= openLibc<WaitpidLibc>({ waitpid: { args: ["i32", "ptr", "i32"], returns: "i32" } });
  const libc = await waitpidLibc;
  if (libc === undefined) return;
  let left = children;
  for (const deadline = performance.now() + 1000; left.length > 0; ) {
    // WNOHANG: 0 while it still runs (SIGKILL takes a moment), its pid once reaped, -1 if it is not ours to reap.
    left = left.filter((pid) => libc.waitpid(pid, null, 1) === 0);
    if (left.length === 0 || performance.now() > deadline) return;
    await Bun.sleep(POLL_MS);
  }
}

/** `children` (of this process) and their descendants. */
function withDescendants(children: number[]): Started[] {
  const found: Started[] = [];
  const seen = new Set<number>();
  const pids = [...children];
  for (let i = 0; i < pids.length; i++) {
    const pid = pids[i]!;
    if (seen.has(pid)) continue;
    seen.add(pid);
    const child = i < children.length;
    const startedAt = startTime(pid);
    // A child that ended already is still ours to reap; anything else that is gone is no one's concern.
    if (startedAt !== undefined) found.push({ pid, startedAt, child });
    else if (child) found.push({ pid, startedAt: "", child });
    pids.push(...childrenOf(pid));
  }
  return found;
}

/** The children of every thread of process `pid`. */
function childrenOf(pid: number): number[] {
  let threads: string[];
  try {
    threads = readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  return threads.flatMap((tid) => childList(`/proc/${pid}/task/${tid}/children`));
}

function childList(path: string): number[] {
  try {
    return readFileSync(path, "latin1").split(" ").filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** Field 22 of /proc/<pid>/stat; undefined for a process that is gone or a zombie. */
function startTime(pid: number): string | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "latin1");
    const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
    if (fields[0] === "Z") return undefined;
    return fields[19];
  } catch {
    return undefined;
  }
}

function isRunning(started: Started): boolean {
  return startTime(started.pid) === started.startedAt;
}

/** Sends the signal if the process is still the one found; false when it is gone. */
function signal(started: Started, name: NodeJS.Signals): boolean {
  if (!isRunning(started)) return false;
  try {
    process.kill(started.pid, name);
    return true;
  } catch {
    return false;
  }
}
