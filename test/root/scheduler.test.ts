import { describe, expect, test } from "bun:test";
import { Scheduler } from "../../src/root/scheduler.ts";
import { RecordingTarget } from "../support/feed-target.ts";

// The scheduler's round robin, driven by hand without sockets (as bench/scheduler.bench.ts does):
// targets record the feed frames they are sent; `complete` stands for the node's Done.

const range = (count: number, from = 0) => Array.from({ length: count }, (_, i) => from + i);

/** Three lanes of a fixed window of 8 items, 2 items per frame. */
function threeNodes() {
  const scheduler = new Scheduler({ fixedWindow: 8, maxBatch: 2 });
  const order: string[] = [];
  const targets = ["a", "b", "c"].map((address) => new RecordingTarget(address, order));
  const lanes = targets.map((target) => scheduler.addLane(target, 1, { items: 1000, bytes: 1 << 30 }));
  return { scheduler, order, targets, lanes };
}

describe("Scheduler: round robin", () => {
  test("batches go to the lanes in turn, each up to its window; the rest waits", () => {
    const { scheduler, order, targets } = threeNodes();
    scheduler.enqueueValues(range(30));
    scheduler.pump();
    expect(order).toEqual(["a", "b", "c", "a", "b", "c", "a", "b", "c", "a", "b", "c"]);
    for (const target of targets) {
      expect(target.frames.map((frame) => frame.ids.length)).toEqual([2, 2, 2, 2]);
    }
    // Items leave in the order they were fed, dealt out frame by frame.
    expect(targets[0]!.values).toEqual([0, 1, 6, 7, 12, 13, 18, 19]);
    expect(targets[1]!.values).toEqual([2, 3, 8, 9, 14, 15, 20, 21]);
    expect(scheduler.inFlight).toBe(24);
    expect(scheduler.queued).toBe(6);
  });

  test("a lane with no room is passed over; the one that finishes items gets the next batches", async () => {
    const { scheduler, order, targets, lanes } = threeNodes();
    scheduler.enqueueValues(range(30));
    scheduler.pump();
    order.length = 0;
    // Node b finishes two items, the others none: only b has room.
    for (const id of targets[1]!.frames[0]!.ids) expect(scheduler.complete(lanes[1]!, id)).toBe(true);
    await Promise.resolve(); // complete() pumps at the end of the turn
    expect(order).toEqual(["b"]);
    expect(targets[1]!.frames.at(-1)!.values).toEqual([24, 25]);
    expect(lanes.map((lane) => lane.inFlight)).toEqual([8, 8, 8]);
    // A late duplicate Done changes nothing.
    expect(scheduler.complete(lanes[1]!, targets[1]!.frames[0]!.ids[0]!)).toBe(false);
  });

  test("the turn goes on where it stopped: successive pumps start at the next lane", () => {
    const scheduler = new Scheduler({ fixedWindow: 100, maxBatch: 2 });
    const order: string[] = [];
    const targets = ["a", "b", "c"].map((address) => new RecordingTarget(address, order));
    for (const target of targets) {
      const lane = scheduler.addLane(target, 1, { items: 1000, bytes: 1 << 30 });
      lane.window.sample(1, 0); // items back in 1 ms: whole batches, however few wait (see the spread below)
    }
    for (let round = 0; round < 5; round++) {
      scheduler.enqueueValues([round * 2, round * 2 + 1]); // one frame's worth each time
      scheduler.pump();
    }
    expect(order).toEqual(["a", "b", "c", "a", "b"]);
  });

  test("room for less than two batches goes out in one frame while more items wait than the lanes have room for", async () => {
    const scheduler = new Scheduler({ fixedWindow: 8 }); // batches of a quarter window: 2 items
    const order: string[] = [];
    const targets = ["a", "b"].map((address) => new RecordingTarget(address, order));
    const lanes = targets.map((target) => scheduler.addLane(target, 1, { items: 1000, bytes: 1 << 30 }));
    scheduler.enqueueValues(range(100));
    scheduler.pump();
    // Room for a whole window goes a batch a frame (a node starts on the first while the next travels).
    for (const target of targets) expect(target.frames.map((frame) => frame.ids.length)).toEqual([2, 2, 2, 2]);
    // Node a finishes 3 (one results frame's worth): the 3 places go back in one frame, not a batch of 2
    // and a single item lingering for room.
    for (const id of targets[0]!.frames[0]!.ids) scheduler.complete(lanes[0]!, id);
    scheduler.complete(lanes[0]!, targets[0]!.frames[1]!.ids[0]!);
    await Promise.resolve(); // complete() pumps at the end of the turn
    expect(targets[0]!.frames.map((frame) => frame.ids.length)).toEqual([2, 2, 2, 2, 3]);
    expect(targets[0]!.frames[4]!.values).toEqual([16, 17, 18]);
  });

  test("with fewer, a batch a turn, so that a few items spread over the nodes", () => {
    const scheduler = new Scheduler({ fixedWindow: 8 });
    const targets = ["a", "b"].map((address) => new RecordingTarget(address));
    for (const target of targets) scheduler.addLane(target, 1, { items: 1000, bytes: 1 << 30 });
    scheduler.enqueueValues(range(6));
    scheduler.pump();
    expect(targets[0]!.frames.map((frame) => frame.values)).toEqual([[0, 1], [4]]);
    expect(targets[1]!.frames.map((frame) => frame.values)).toEqual([[2, 3], [5]]);
  });

  test("a stalled node gets nothing more while a node that keeps up takes the rest", () => {
    const { scheduler, targets, lanes } = threeNodes();
    scheduler.enqueueValues(range(300));
    scheduler.pump();
    // a and b answer every frame; c never does.
    for (let turn = 0; turn < 200 && scheduler.queued > 0; turn++) {
      for (const index of [0, 1]) {
        for (const frame of targets[index]!.frames) for (const id of frame.ids) scheduler.complete(lanes[index]!, id);
      }
      scheduler.pump();
    }
    expect(scheduler.queued).toBe(0);
    expect(targets[2]!.ids).toHaveLength(8); // its first window, never more
    expect(targets[0]!.ids.length + targets[1]!.ids.length).toBe(292);
    expect(Math.abs(targets[0]!.ids.length - targets[1]!.ids.length)).toBeLessThanOrEqual(2);
  });

  test("a lost node's items go to the front of the queue and out to the others, under new ids", () => {
    const { scheduler, targets, lanes } = threeNodes();
    scheduler.enqueueValues(range(24));
    scheduler.pump();
    const lostIds = targets[2]!.ids;
    const lostValues = targets[2]!.values;
    for (const index of [0, 1]) for (const id of targets[index]!.ids) scheduler.complete(lanes[index]!, id);
    const sentBefore = [targets[0]!.frames.length, targets[1]!.frames.length];
    expect(scheduler.removeLane(lanes[2]!, [lostIds[0]!])).toEqual({ requeued: 7, finished: 1, givenUp: [] });
    scheduler.pump();
    const resent = [...targets[0]!.frames.slice(sentBefore[0]), ...targets[1]!.frames.slice(sentBefore[1])];
    const values = resent.flatMap((frame) => frame.values);
    expect(values.sort((x, y) => (x as number) - (y as number))).toEqual(lostValues.slice(1));
    for (const frame of resent) for (const id of frame.ids) expect(lostIds).not.toContain(id);
    expect(scheduler.lanes).toHaveLength(2);
    expect(scheduler.queued).toBe(0);
  });

  test("a node with idle workers while its partial batch lingers for room gets a larger window", () => {
    const scheduler = new Scheduler();
    const target = new RecordingTarget("a");
    const lane = scheduler.addLane(target, 2, { items: 10_000, bytes: 1 << 30 });
    try {
      scheduler.enqueueValues(range(1000));
      scheduler.pump();
      const window = lane.window.size;
      const batch = lane.window.batchSize(4096);
      expect(lane.inFlight).toBe(window);
      // A few items done: room for less than a batch, so the rest lingers for room rather than going now.
      const frames = target.frames.length;
      for (const id of target.frames[0]!.ids.slice(0, batch - 1)) scheduler.complete(lane, id);
      scheduler.pump();
      expect(target.frames.length).toBe(frames);
      expect(lane.inFlight).toBeLessThan(window);
      // The node says a worker is idle: items wait here for want of room, so the window grows.
      scheduler.reportIdle(lane, 1);
      expect(lane.window.size).toBeGreaterThan(window);
    } finally {
      scheduler.clear();
    }
  });
});

describe("Scheduler: a few slow items spread over the nodes", () => {
  /** `count` lanes of `workers` workers each, with the adaptive window (its first size: 4 × 2 × workers). */
  function lanesOf(count: number, workers: number) {
    const scheduler = new Scheduler();
    const targets = range(count).map((i) => new RecordingTarget(String.fromCharCode(97 + i)));
    const lanes = targets.map((target) => scheduler.addLane(target, workers, { items: 1000, bytes: 1 << 30 }));
    return { scheduler, targets, lanes };
  }

  test("items that fit in the windows go out in shares of them, not a batch to the first node", () => {
    // Three items of seconds on 2 nodes of 2 workers: each node starts on its share at once.
    const two = lanesOf(2, 2);
    two.scheduler.enqueueValues(range(3));
    two.scheduler.pump();
    expect(two.targets.map((target) => target.values)).toEqual([[0, 1], [2]]);
    // Ten on 3 nodes of 4 workers: no node gets more items than it has workers; all run in one round.
    const three = lanesOf(3, 4);
    three.scheduler.enqueueValues(range(10));
    three.scheduler.pump();
    const shares = three.targets.map((target) => target.values.length);
    expect(shares.reduce((sum, n) => sum + n, 0)).toBe(10);
    expect(Math.max(...shares)).toBeLessThanOrEqual(4);
  });

  test("a node's share counts what it has in flight: new items go to the node that has fewer", () => {
    const { scheduler, targets, lanes } = lanesOf(2, 2);
    scheduler.enqueueValues(range(3));
    scheduler.pump(); // a: 0, 1; b: 2
    for (const id of targets[1]!.frames[0]!.ids) scheduler.complete(lanes[1]!, id); // b finished its one
    scheduler.enqueueValues([10, 11, 12]);
    scheduler.pump();
    // 5 in flight and waiting together, 3 a node at most (half, rounded up): b, with none, takes 2; a one.
    expect(targets[0]!.values).toEqual([0, 1, 10]);
    expect(targets[1]!.values).toEqual([2, 11, 12]);
  });

  test("shares follow the nodes' workers: a node of one worker gets one of five items, a node of four the rest", () => {
    const scheduler = new Scheduler();
    const targets = ["small", "large"].map((address) => new RecordingTarget(address));
    scheduler.addLane(targets[0]!, 1, { items: 1000, bytes: 1 << 30 });
    scheduler.addLane(targets[1]!, 4, { items: 1000, bytes: 1 << 30 });
    scheduler.enqueueValues(range(5));
    scheduler.pump();
    expect(targets.map((target) => target.values.length)).toEqual([1, 4]);
  });

  test("nodes whose items come back fast still get whole batches", () => {
    const { scheduler, targets, lanes } = lanesOf(2, 2);
    for (const lane of lanes) lane.window.sample(1, 0);
    scheduler.enqueueValues(range(3));
    scheduler.pump();
    expect(targets.map((target) => target.values)).toEqual([[0, 1, 2], []]);
  });
});
