/**
 * Servers started by `Root.local` must not outlive the program that started them, even when that
 * program is killed with SIGKILL and has no chance to stop them. Such a server is given its parent's
 * PID in `PCLUSTER_EXIT_WITH_PARENT`; it checks on that process every second and, once it is gone,
 * stops itself the graceful way (SIGTERM to itself, which its signal handler turns into a clean stop).
 */
export const EXIT_WITH_PARENT_ENV = "PCLUSTER_EXIT_WITH_PARENT";

const CHECK_EVERY_MS = 1000;

/** Watches the PID in `PCLUSTER_EXIT_WITH_PARENT`, if set; call once the SIGTERM handler is installed. */
export function exitWithParent(): void {
  const value = process.env[EXIT_WITH_PARENT_ENV];
  if (value === undefined || value === "") return;
  const parent = Number(value);
  if (!Number.isInteger(parent) || parent <= 1) return;
  const timer = setInterval(() => {
    // The parent is gone when signal 0 to it fails, or when we were reparented (to init or a subreaper).
    if (isAlive(parent) && process.ppid === parent) return;
    clearInterval(timer);
    process.kill(process.pid, "SIGTERM");
  }, CHECK_EVERY_MS);
  timer.unref();
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as { code?: string }).code === "EPERM";
  }
}
