/**
 * Polls `look` until `ready` holds for what it returns, and returns that; throws after `timeoutMs`
 * with the last value seen (tests wait for conditions, never for a fixed time).
 */
export async function waitUntil<T>(
  what: string,
  look: () => T | Promise<T>,
  ready: (value: T) => boolean,
  timeoutMs = 15_000,
  everyMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await look();
    if (ready(value)) return value;
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last seen: ${Bun.inspect(value)}`);
    await Bun.sleep(everyMs);
  }
}
