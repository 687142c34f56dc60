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

/**
 * CPU seconds each kind of thread of a process has used so far (threads that ended since are not
 * counted: a node's threads live as long as its pipeline). Empty where there is no /proc.
 */
export function threadCpuSeconds(pid: number): Record<ThreadKind, number> {
  const seconds: Record<ThreadKind, number> = { workers: 0, socket: 0, jit: 0, other: 0 };
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return seconds;
  }
  for (const tid of tids) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
      const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      seconds[threadKind(name, pid, Number(tid))] += (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_S;
    } catch {
      // the thread ended meanwhile
    }
  }
  return seconds;
}
