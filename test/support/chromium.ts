import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { BrowserContext } from "playwright-core";

/** Debian's `chromium` package (CI installs it: see .ci/run). */
export const CHROMIUM = "/usr/bin/chromium";

/** Why a browser test cannot run here, or undefined when it can. */
export const chromiumMissing: string | undefined = existsSync(CHROMIUM)
  ? undefined
  : `no Chromium at ${CHROMIUM}: install Debian's package (apt-get install -y chromium) to run the browser tests`;

export interface Chromium {
  context: BrowserContext;
  /** Closes the browser, ends any of its processes still there (by PID) and removes its profile. */
  close(): Promise<void>;
}

/** Headless Chromium, driven by playwright-core, on a fresh profile; offline but for loopback. */
export async function launchChromium(): Promise<Chromium> {
  const { chromium } = await import("playwright-core");
  const profile = mkdtempSync(join(tmpdir(), "pcluster-chromium-"));
  const before = new Set(childPids());
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    timeout: 60_000,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const started = childPids().filter((pid) => !before.has(pid));
  return {
    context,
    async close() {
      await Promise.race([context.close(), Bun.sleep(10_000)]);
      for (const pid of started) {
        try {
          process.kill(pid, "SIGKILL"); // only if closing left it behind: it is the browser we started
        } catch {
          // gone, as it should be
        }
      }
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** This process's children, by PID. */
function childPids(): number[] {
  const ps = Bun.spawnSync(["ps", "-o", "pid=", "--ppid", String(process.pid)]);
  return ps.stdout
    .toString()
    .split("\n")
    .map(Number)
    .filter((pid) => pid > 0 && pid !== ps.pid);
}
