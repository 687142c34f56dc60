/**
 * The physical limit of the scale bench: a process of `workers` Worker threads, each doing nothing but
 * `Atomics.wait` of `ms` in a loop from `startAt` to `endAt` (epoch ms, so that N such processes run
 * side by side). Prints one JSON line: the waits done and this process's CPU over that time (µs).
 *
 *   bun bench/support/bare-waits.ts <workers> <ms> <startAt> <endAt>
 */
const [workers, ms, startAt, endAt] = process.argv.slice(2).map(Number) as [number, number, number, number];
const threads = Array.from({ length: workers }, () => new Worker(new URL("./bare-wait-worker.ts", import.meta.url)));
const counts = threads.map(
  (thread) =>
    new Promise<number>((resolve) => {
      thread.onmessage = (event: MessageEvent<number>) => resolve(event.data);
      thread.postMessage({ ms, startAt, endAt });
    }),
);
await Bun.sleep(Math.max(0, startAt - Date.now()));
const cpuBefore = process.cpuUsage();
const waits = (await Promise.all(counts)).reduce((sum, count) => sum + count, 0);
const cpu = process.cpuUsage(cpuBefore);
console.log(JSON.stringify({ waits, cpuMicros: cpu.user + cpu.system }));
process.exit(0);
