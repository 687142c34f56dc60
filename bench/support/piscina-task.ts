// piscina's worker: one function per task name, the same functions the engine runs.
import { asyncWait, blockingWait, chain, identity, spin } from "./tasks/index.ts";

const tasks = { identity, chain, spin, blockingWait, asyncWait } as Record<string, (item: never) => unknown>;

export default function run({ task, item }: { task: string; item: never }): unknown {
  return tasks[task]!(item);
}

/** piscina fed arrays: the caller batches items itself (a different task signature). */
export function runBatch({ task, items }: { task: string; items: never[] }): unknown[] {
  const fn = tasks[task]!;
  return items.map((item) => fn(item));
}
