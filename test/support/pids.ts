import { readFileSync, readdirSync } from "node:fs";

/** Gone, or a zombie only waiting for its reaper (it runs no more). Linux: reads /proc. */
export function isGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return true;
  }
  try {
    return /^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return true;
  }
}

/** Waits (bounded) until every pid is gone; returns those still alive. */
export async function waitGone(pids: number[], timeoutMs = 5000): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const alive = pids.filter((pid) => !isGone(pid));
    if (alive.length === 0 || Date.now() > deadline) return alive;
    await Bun.sleep(50);
  }
}

/** The running (not zombie) child processes of `parent`, from /proc. */
export function childrenOf(parent: number): number[] {
  const children: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, "utf8");
    } catch {
      continue; // gone meanwhile
    }
    // "pid (comm) state ppid …": comm may hold spaces and parentheses, so split after the last ")".
    const [state, ppid] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (Number(ppid) === parent && state !== "Z") children.push(Number(entry));
  }
  return children.sort((a, b) => a - b);
}

/** SIGKILLs each pid that still runs (only ever pids a test started and recorded). */
export function killPids(pids: Iterable<number>): void {
  for (const pid of pids) {
    if (isGone(pid)) continue;
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone meanwhile
    }
  }
}
