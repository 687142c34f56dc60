import { describe, expect, test } from "bun:test";
import { Hunger, ShareRotation } from "../../src/node/worker/fan-out-sharing.ts";
import { Control, controlSlots } from "../../src/node/worker-messages.ts";

/** The control words all workers share, as the engine makes them, and each worker's view of hunger. */
function sharedHunger(workers: number): { control: Int32Array; hunger: Hunger[] } {
  const control = new Int32Array(new SharedArrayBuffer(controlSlots(workers) * 4));
  return { control, hunger: Array.from({ length: workers }, (_, self) => new Hunger(control, self, workers)) };
}

function turns(rotation: ShareRotation, count: number): number[] {
  return Array.from({ length: count }, () => rotation.next());
}

describe("hunger and the share rotation", () => {
  test("nobody hungry: every sub-item runs at home", () => {
    const { hunger } = sharedHunger(2);
    expect(turns(new ShareRotation(hunger[0]!), 10)).toEqual(Array(10).fill(-1));
  });

  test("a claimed worker gets every other sub-item until its budget is spent, then must ask again", () => {
    const { control, hunger } = sharedHunger(2);
    const rotation = new ShareRotation(hunger[0]!, 3);
    hunger[1]!.announce();
    expect(Atomics.load(control, Control.HungryCount)).toBe(1);
    expect(turns(rotation, 8)).toEqual([1, -1, 1, -1, 1, -1, -1, -1]);
    expect(Atomics.load(control, Control.HungryCount)).toBe(0);
  });

  test("a worker that says it is hungry again while claimed has its budget renewed, not a second turn", () => {
    const { hunger } = sharedHunger(2);
    const rotation = new ShareRotation(hunger[0]!, 4);
    hunger[1]!.announce();
    const seen: number[] = [];
    for (let i = 0; i < 40; i++) {
      seen.push(rotation.next());
      hunger[1]!.announce(); // it ran its sub-item at once and is hungry again
    }
    // An equal share all along: one here, one there.
    expect(seen.filter((target) => target === 1).length).toBe(20);
    for (let i = 0; i + 1 < seen.length; i++) expect(seen[i]).not.toBe(seen[i + 1]);
  });

  test("each announcement is taken by one sharer only, and a retracted one by none", () => {
    const { control, hunger } = sharedHunger(3);
    hunger[2]!.announce();
    hunger[2]!.announce(); // saying it twice is one announcement
    expect(hunger[0]!.claim()).toBe(2);
    expect(hunger[1]!.claim()).toBe(-1);
    hunger[2]!.announce();
    hunger[2]!.retract();
    expect(hunger[0]!.claim()).toBe(-1);
    expect(Atomics.load(control, Control.HungryCount)).toBe(0);
  });

  test("two hungry workers share a fan-out three ways", () => {
    const { hunger } = sharedHunger(3);
    const rotation = new ShareRotation(hunger[0]!, 100);
    hunger[1]!.announce();
    expect(rotation.next()).toBe(1);
    hunger[2]!.announce();
    const seen = turns(rotation, 30);
    expect(seen.filter((target) => target === -1).length).toBe(10);
    expect(seen.filter((target) => target === 1).length).toBe(10);
    expect(seen.filter((target) => target === 2).length).toBe(10);
  });
});
