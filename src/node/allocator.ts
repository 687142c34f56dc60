/**
 * The memory allocator setting a node runs with.
 *
 * Bun allocates through mimalloc. Each time a thread goes idle, Bun's mimalloc returns the free blocks
 * inside pages still in use to the system ("purge holes"). A node's threads go idle between batches
 * many times a second. The next batch then faults that memory in again, one page at a time, and a page
 * fault costs about 10 µs on the virtual machines nodes often run on. Word count through one node of 2
 * workers (bench/wordcount.bench.ts) spent about a quarter of the node's CPU that way: 3.1 CPU-s
 * with the holes purged, 2.3 without. Plain mimalloc never purges holes. Whole free pages still go back
 * to the system, so an idle node still shrinks.
 *
 * Those whole pages go back after a delay (mimalloc's purge delay, 100 ms by default, by a thread of its
 * own). A node that moves hundreds of thousands of items a second frees and takes pages again within
 * a few hundred milliseconds: 2 nodes × 2 workers on identity items faulted in 0.02–0.05 pages per item,
 * 0.01–0.04 with a delay of a second, and spent 1.1–1.6 µs of CPU per item instead of 1.6–2.2 (the
 * last of three runs of 400 000 items, three times each). A node idle for a second still
 * gives its free pages back.
 *
 * mimalloc reads its options once, when the process starts, from the environment. `pcluster node` thus
 * replaces itself (execve: same pid, same arguments) by a process with the variables set, before it
 * loads anything else. Root.local starts its nodes with them set. A user who sets a variable, to any
 * value, keeps that value.
 */

import { openLibc } from "./libc.ts";

/** The variables a node runs with, unless the user set them. */
export const NODE_ALLOCATOR_ENV: Readonly<Record<string, string>> = {
  MIMALLOC_PURGE_HOLES: "0",
  MIMALLOC_PURGE_DELAY: "1000",
};

/** `env` with the node's allocator variables added where it lacks them. */
export function withNodeAllocator(env: Record<string, string | undefined>): Record<string, string | undefined> {
  const result = { ...env };
  for (const [name, value] of Object.entries(NODE_ALLOCATOR_ENV)) result[name] ??= value;
  return result;
}

/** Whether this process has every one of the node's allocator variables (set by us or by the user). */
function hasNodeAllocator(): boolean {
  return Object.keys(NODE_ALLOCATOR_ENV).every((name) => process.env[name] !== undefined);
}

/**
 * Replaces this process by the same command with the node's allocator variables set, unless it has
 * them already. Returns only when it cannot (no FFI on this platform, no C library found, execve
 * refused): the node then runs with the allocator as it is, which is only slower.
 */
export async function restartWithNodeAllocator(): Promise<void> {
  if (hasNodeAllocator() || process.platform === "win32") return;
  try {
    const { FFIType, ptr } = await import("bun:ffi");
    const signature = { execve: { args: [FFIType.ptr, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 } };
    const execve = (await openLibc<{ execve(path: number, argv: number, envp: number): number }>(signature))?.execve;
    if (execve === undefined) return;
    const strings: Buffer[] = []; // kept reachable until execve has read them
    const cString = (text: string): number => {
      const bytes = Buffer.from(`${text}\0`);
      strings.push(bytes);
      return ptr(bytes);
    };
    const cArray = (texts: string[]): number => {
      const pointers = new BigUint64Array(texts.length + 1); // ends with a null pointer
      texts.forEach((text, index) => {
        pointers[index] = BigInt(cString(text));
      });
      return ptr(pointers);
    };
    // Bun's own flags (`bun --smol cli.ts`) come back through BUN_OPTIONS when that is where they came from.
    const bunFlags = process.env.BUN_OPTIONS ? [] : process.execArgv;
    const argv = [process.execPath, ...bunFlags, ...process.argv.slice(1)];
    const env = withNodeAllocator(process.env);
    const envp = Object.entries(env).flatMap(([name, value]) => (value === undefined ? [] : [`${name}=${value}`]));
    execve(cString(process.execPath), cArray(argv), cArray(envp));
    // Only a failed execve returns: run on as we are.
  } catch {
    // no bun:ffi here: run on as we are
  }
}
