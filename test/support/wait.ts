/** Waiting for a condition in tests: bounded, and a failure says what was awaited and what was seen last. */

export interface WaitOptions<T> {
  /** What is awaited, for the failure message ("every worker held by its full output ring"). */
  what: string;
  /** Bound on the wait (default 10 s). */
  timeoutMs?: number;
  /** When the value read is what was awaited (default: when it is truthy). */
  until?: (value: T) => boolean;
  /** What to show of the last look on failure (default: the value read; a string as it is). */
  show?: () => unknown;
  /** Pause between looks (default 5 ms). */
  everyMs?: number;
}

export class WaitTimeout extends Error {
  override name = "WaitTimeout";
}

/**
 * Reads `read()` until `until(value)` holds and returns that value; throws a `WaitTimeout` naming
 * `what` and the last value seen when `timeoutMs` passes first.
 *
 * @example
 * await waitFor(() => harness.outputCount, { what: "the first outputs", until: (n) => n > 0 });
 */
export async function waitFor<T>(read: () => T | Promise<T>, options: WaitOptions<T>): Promise<T> {
  const { what, timeoutMs = 10_000, until = Boolean, show, everyMs = 5 } = options;
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (until(value)) return value;
    if (performance.now() > deadline) {
      const last = show === undefined ? value : show();
      const seen = typeof last === "string" ? last : Bun.inspect(last, { depth: 3 });
      throw new WaitTimeout(`timed out after ${timeoutMs} ms waiting for ${what}; last seen: ${seen}`);
    }
    await Bun.sleep(everyMs);
  }
}

/** Settles as `promise` does, or throws a `WaitTimeout` naming `what` once `timeoutMs` passes. */
export async function within<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new WaitTimeout(`${what} did not happen within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** `waitFor` with its parts as arguments: what is awaited, how to look, and when the look is ready. */
export function waitUntil<T>(
  what: string,
  look: () => T | Promise<T>,
  ready: (value: T) => boolean,
  timeoutMs = 15_000,
  everyMs = 50,
): Promise<T> {
  return waitFor(look, { what, until: ready, timeoutMs, everyMs });
}
