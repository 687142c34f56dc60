/**
 * How a server process (`pcluster node`, `pcluster log`) lives until it is asked to stop: SIGINT,
 * SIGTERM, or — for one started by `Root.local` — the end of the program that started it. Such a
 * server must not outlive that program even when it is killed with SIGKILL and has no chance to stop
 * it: it is given its parent's PID in `PCLUSTER_EXIT_WITH_PARENT`, checks on that process every
 * second, and stops the same graceful way once it is gone.
 */
export const EXIT_WITH_PARENT_ENV = "PCLUSTER_EXIT_WITH_PARENT";

const CHECK_EVERY_MS = 1000;

/**
 * Resolves once `stop` has run (or failed) after the first of SIGINT, SIGTERM or the parent's end. With
 * `drain`, a signal runs it first (the server finishes what it has), and a second signal stops at once;
 * the parent's end stops at once (whoever the work was for is gone).
 */
export function runUntilStopped(stop: () => Promise<void>, drain?: () => Promise<void>): Promise<void> {
  return new Promise((resolveStopped) => {
    let draining = false;
    let stopping = false;
    const stopNow = (): void => {
      if (stopping) return; // a second signal, or the parent's end, came during the drain
      stopping = true;
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
      clearInterval(watch);
      stop().then(resolveStopped, resolveStopped);
    };
    const onSignal = (): void => {
      if (drain === undefined || draining) return stopNow();
      draining = true;
      drain().then(stopNow, stopNow);
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
    const watch = watchParent(stopNow);
  });
}

/** Calls `onGone` once the process in `PCLUSTER_EXIT_WITH_PARENT` (if set) is gone. */
function watchParent(onGone: () => void): ReturnType<typeof setInterval> | undefined {
  const value = process.env[EXIT_WITH_PARENT_ENV];
  if (value === undefined || value === "") return undefined;
  const parent = Number(value);
  if (!Number.isInteger(parent) || parent <= 1) return undefined;
  const timer = setInterval(() => {
    // The parent is gone when signal 0 to it fails, or when we were reparented (to init or a subreaper).
    if (!processIsAlive(parent) || process.ppid !== parent) onGone();
  }, CHECK_EVERY_MS);
  timer.unref();
  return timer;
}

/** Whether process `pid` runs (one owned by another user counts: signalling it was refused, not missed). */
export function processIsAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as { code?: string }).code === "EPERM";
  }
}
