import { afterAll, describe, expect, test } from "bun:test";
import { EngineHarness, removeDir, writeTaskPackage } from "../support/engine.ts";

/**
 * A sub-item that passes from one task to the next inside a worker is never encoded — unless the
 * worker shares it with an idle worker (a spill), which needs it encoded. A sub-item that cannot be
 * carried as itself (README: "What an item may be") is then not shared: it runs where it is, and
 * arrives at the next task as it was given, never changed on the way.
 */
const TASKS = `
const thread = Math.random().toString(36).slice(2);
export function split(count) { return Array.from({ length: count }, (_, i) => ({ i, parent: thread })); }
export function splitWithCallbacks(count) {
  return Array.from({ length: count }, (_, i) => ({ i, parent: thread, cb: () => i * 2 }));
}
export function slowWhere(sub) {
  const end = performance.now() + 0.2;
  while (performance.now() < end);
  return { i: sub.i, parent: sub.parent, thread, doubled: typeof sub.cb === "function" ? sub.cb() : null };
}
`;

const dir = writeTaskPackage({ "index.ts": TASKS });
afterAll(() => removeDir(dir));

type Sub = { i: number; parent: string; thread: string; doubled: number | null };

describe("sub-items shared with an idle worker", () => {
  test("plain sub-items of a large fan-out are shared; those holding a function stay home, intact", async () => {
    const chain = (split: string) => [{ export: split, isGenerator: true }, { export: "slowWhere" }];
    const start = (split: string) => EngineHarness.start(dir, chain(split), { workers: 2 });
    const plain = await start("split");
    try {
      plain.feed([400]);
      await plain.waitEmpty();
      const subs = plain.values() as Sub[];
      expect(subs.length).toBe(400);
      // The control: in this setup, sharing happens.
      expect(subs.filter((sub) => sub.thread !== sub.parent).length).toBeGreaterThan(50);
    } finally {
      await plain.engine.reset();
    }

    const withCallbacks = await start("splitWithCallbacks");
    try {
      withCallbacks.feed([400]);
      await withCallbacks.waitEmpty();
      expect(withCallbacks.errors).toEqual([]);
      const subs = withCallbacks.values() as Sub[];
      expect(subs.length).toBe(400);
      for (const sub of subs) {
        expect(sub.thread).toBe(sub.parent);
        expect(sub.doubled).toBe(sub.i * 2);
      }
    } finally {
      await withCallbacks.engine.reset();
    }
  }, 60_000);
});
