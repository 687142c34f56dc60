import { readFileSync, readdirSync } from "node:fs";

const CLOCK_TICKS_PER_S = 100;

/** CPU seconds (user + system) a process has used so far, from /proc/<pid>/stat. */
export function processCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" "); // after the command name, which may hold spaces
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_S; // utime, stime (fields 14, 15)
}

/**
 * What a node's threads are, by the name the kernel shows (/proc/<pid>/task/<tid>/comm): its Worker
 * threads (the tasks and their item path), its socket thread (named after the executable: the engine,
 * the connections), JSC's JIT compiler threads, and the rest (the garbage collector's helpers, the
 * allocator's scavenger, Bun's pools).
 */
export type ThreadKind = "workers" | "socket" | "jit" | "other";

function threadKind(name: string, pid: number, tid: number): ThreadKind {
  if (name === "Worker") return "workers";
  if (tid === pid) return "socket";
  if (name.startsWith("JITWorker")) return "jit";
  return "other";
}

/** Each live thread of a process (by tid): its kind and the CPU seconds it has used so far. */
export type ThreadTimes = Map<number, { kind: ThreadKind; seconds: number }>;

/** The threads of process `pid` now (see ThreadTimes); empty where there is no /proc. */
export function threadTimes(pid: number): ThreadTimes {
  const times: ThreadTimes = new Map();
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return times;
  }
  for (const tid of tids) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
      const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const seconds = (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_S;
      times.set(Number(tid), { kind: threadKind(name, pid, Number(tid)), seconds });
    } catch {
      // the thread ended meanwhile
    }
  }
  return times;
}

/**
 * CPU seconds each kind of thread used between two looks, thread by thread: a thread that started since
 * counts whole, one that ended since counts nothing (its last share is lost; JSC ends idle JIT threads).
 * Summing by kind before and after instead made a kind negative whenever one of its threads ended.
 */
export function threadCpuBetween(before: ThreadTimes, after: ThreadTimes): Record<ThreadKind, number> {
  const seconds: Record<ThreadKind, number> = { workers: 0, socket: 0, jit: 0, other: 0 };
  for (const [tid, now] of after) seconds[now.kind] += now.seconds - (before.get(tid)?.seconds ?? 0);
  return seconds;
}
