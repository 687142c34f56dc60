import { describe, expect, test } from "bun:test";
import { RunningItems } from "../../src/node/running-items.ts";
import { waitUntil } from "../support/wait.ts";

const LONG_AGO = () => Date.now() - 60_000;

describe("RunningItems", () => {
  test("a fresh table holds no item, and none overdue", () => {
    const table = new RunningItems(RunningItems.allocate(4));
    expect(table.count).toBe(0);
    expect(table.positions()).toEqual([]);
    expect(table.overdue(Date.now() + 1)).toEqual([]);
  });

  test("items holding a place are listed; one that got nothing done since `before` is overdue", () => {
    const table = new RunningItems(RunningItems.allocate(4));
    const engine = new RunningItems(table.buffer); // the engine's view of the same memory
    table.clear(); // as a worker starting on it does
    const a = table.add(100);
    const b = table.add(200);
    expect(engine.count).toBe(2);
    expect(engine.positions().sort((x, y) => x - y)).toEqual([100, 200]);
    expect(engine.overdue(LONG_AGO())).toEqual([]);
    expect(engine.overdue(Date.now() + 1).sort((x, y) => x - y)).toEqual([100, 200]);
    table.remove(a);
    expect(engine.positions()).toEqual([200]);
    // A place taken again is timed from then, not from its last item.
    const c = table.add(300);
    expect(c).toBe(a);
    expect(engine.overdue(LONG_AGO())).toEqual([]);
    table.remove(b);
    table.remove(c);
    expect(engine.count).toBe(0);
    expect(engine.overdue(Date.now() + 1)).toEqual([]);
  });

  test("read by another thread while its worker takes and frees places, no item ever looks overdue", async () => {
    const buffer = RunningItems.allocate(8);
    const stop = new SharedArrayBuffer(8);
    const control = new Int32Array(stop);
    const worker = new Worker(new URL("../support/running-items-writer.ts", import.meta.url).href);
    const rounds = new Promise<number>((resolve) => {
      worker.onmessage = (event: MessageEvent<number>) => resolve(event.data);
    });
    try {
      worker.postMessage({ buffer, stop });
      const engine = new RunningItems(buffer);
      await waitUntil(
        "the writer to run",
        () => Atomics.load(control, 1),
        (rounds) => rounds > 0,
        10_000,
      );
      let looks = 0;
      const seen: number[] = [];
      for (const end = Date.now() + 500; Date.now() < end; looks++) seen.push(...engine.overdue(LONG_AGO()));
      Atomics.store(control, 0, 1);
      expect(await rounds).toBeGreaterThan(0);
      expect(looks).toBeGreaterThan(0);
      expect(seen).toEqual([]);
    } finally {
      worker.terminate();
    }
  });
});
