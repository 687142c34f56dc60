import { describe, expect, test } from "bun:test";
import { FLAG_SUB_ITEM } from "../../src/protocol/record.ts";
import { ItemTracker } from "../../src/node/engine/item-tracker.ts";

describe("ItemTracker", () => {
  test("an item that never shared is done with its own Done and its own outputs", () => {
    const tracker = new ItemTracker();
    expect(tracker.finish(0, 7, 3)).toBe(7);
    expect(tracker.finishedOutputs).toBe(3);
  });

  test("an item with shared parts is done with the last of its parts, whichever that is, with every part's outputs", () => {
    for (const order of [
      ["root", "a", "b"],
      ["a", "root", "b"],
      ["b", "a", "root"],
    ]) {
      const tracker = new ItemTracker();
      const a = tracker.share(0, 7);
      const b = tracker.share(FLAG_SUB_ITEM, a); // a part of a part: still item 7's
      expect(tracker.rootOf(FLAG_SUB_ITEM, b)).toBe(7);
      const outputs: Record<string, number> = { root: 2, a: 5, b: 11 };
      const results = order.map((part) =>
        part === "root"
          ? tracker.finish(0, 7, outputs[part]!)
          : tracker.finish(FLAG_SUB_ITEM, part === "a" ? a : b, outputs[part]!),
      );
      expect(results).toEqual([-1, -1, 7]);
      expect(tracker.finishedOutputs).toBe(18);
      expect(tracker.subItems).toBe(0);
    }
  });

  test("other items finish as usual while one has parts in flight", () => {
    const tracker = new ItemTracker();
    const part = tracker.share(0, 1);
    expect(tracker.finish(0, 2, 4)).toBe(2);
    expect(tracker.finishedOutputs).toBe(4);
    expect(tracker.finish(0, 1, 1)).toBe(-1);
    expect(tracker.finish(0, 3, 0)).toBe(3);
    expect(tracker.finishedOutputs).toBe(0);
    expect(tracker.finish(FLAG_SUB_ITEM, part, 6)).toBe(1);
    expect(tracker.finishedOutputs).toBe(7);
  });
});
