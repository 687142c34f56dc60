import { afterAll, expect, test } from "bun:test";
import { StallWatch } from "../../src/node/watchdog.ts";
import { killAll, spawnBun } from "../support/processes.ts";

/**
 * The node's watchdog (src/node/watchdog.ts): a process whose main thread stops running is ended, saying
 * why (a process of its own); a process stopped as a whole for longer than the bound is not (its count).
 */

const STALL_MS = 3000;

afterAll(() => killAll(), 20_000);

test("a process whose main thread stops running is ended by its watchdog, which says why", async () => {
  const child = spawnBun(["test/support/stuck-main.ts", String(STALL_MS)]);
  await child.waitFor(/ready/, 15_000);
  await child.waitExit(30_000);
  expect(child.proc.signalCode).toBe("SIGKILL");
  await child.drained;
  expect(child.stderr).toContain("stuck-main: its main thread has not run for");
  expect(child.stderr).toContain("ending the process so that its supervisor starts it again (--stall-exit)");
}, 60_000);

test("the count of how long the main thread has not run: unmoved looks add up, a move or a late look starts afresh", () => {
  const watch = new StallWatch(100, 7, 0);
  expect(watch.look(7, 100)).toBe(100);
  expect(watch.look(7, 210)).toBe(210);
  expect(watch.look(8, 300)).toBe(0); // it ran
  expect(watch.look(8, 400)).toBe(100);
  expect(watch.look(8, 500)).toBe(200);
  // The whole process was stopped for 5 s (SIGSTOP, a suspended host): this look comes late. What it
  // missed is not the main thread's; the count starts afresh, and adds up again from there.
  expect(watch.look(8, 5500)).toBe(0);
  expect(watch.look(8, 5600)).toBe(100);
  // Late by less than three periods still counts: a busy host delays a look, not the main thread's stall.
  expect(watch.look(8, 5850)).toBe(350);
});
