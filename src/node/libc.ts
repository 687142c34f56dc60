/**
 * Functions of the C library that Bun has no API for (`execve`, `waitpid`), through `bun:ffi`. Loaded
 * only by what needs them: importing bun:ffi costs a few ms.
 */
import type { FFIFunction } from "bun:ffi";

/** Where the C library is, by platform (the first that opens is used). */
function libcCandidates(): string[] {
  if (process.platform === "darwin") return ["/usr/lib/libSystem.B.dylib"];
  const arch = process.arch === "arm64" ? "aarch64" : "x86_64";
  return ["libc.so.6", `libc.musl-${arch}.so.1`, "libc.so"];
}

/**
 * The C library's `symbols`, typed as `T`; undefined where there is no FFI (Windows) or no C library
 * is found under its usual names.
 */
export async function openLibc<T>(signature: Record<string, FFIFunction>): Promise<T | undefined> {
  if (process.platform === "win32") return undefined;
  try {
    const { dlopen } = await import("bun:ffi");
    for (const path of libcCandidates()) {
      try {
        return dlopen(path, signature).symbols as unknown as T;
      } catch {
        // not this platform's name for it
      }
    }
  } catch {
    // no bun:ffi here
  }
  return undefined;
}
