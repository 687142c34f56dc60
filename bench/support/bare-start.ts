/**
 * The floor of the start bench: a process that starts `workers` bare Worker threads, waits until each
 * has run its first line, prints "ready" and stays until stdin closes — what a node process and its
 * workers would cost if pcluster loaded nothing at all.
 *
 *   bun bench/support/bare-start.ts <workers>
 */
export {}; // a module: it awaits at top level

const workers = Number(process.argv[2] ?? 1);
const source = URL.createObjectURL(new Blob(["postMessage(0)"], { type: "application/javascript" }));
await Promise.all(
  Array.from(
    { length: workers },
    () =>
      new Promise<void>((resolve) => {
        const thread = new Worker(source);
        thread.onmessage = () => resolve();
      }),
  ),
);
console.log("ready");
for await (const _ of Bun.stdin.stream()) {
  // held until the bench closes stdin
}
process.exit(0);
