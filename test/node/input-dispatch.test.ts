import { describe, expect, test } from "bun:test";
import { InputDispatcher } from "../../src/node/engine/input-dispatch.ts";
import { newWorkerSlot } from "../../src/node/engine/worker-slot.ts";
import { ByteRing } from "../../src/node/ring.ts";
import { RecordBatchBuilder, encode } from "../../src/protocol/codec.ts";
import { RecordKind } from "../../src/protocol/record.ts";

/** A feed blob (records only) of `count` small items from id `first` on. */
function feedBlob(first: number, count: number): Uint8Array {
  const batch = new RecordBatchBuilder();
  for (let id = first; id < first + count; id++) batch.append(RecordKind.Input, 0, 0, id, encode({ id }));
  const length = batch.byteLength;
  const frame = batch.finishFrame("feed");
  return frame.subarray(frame.length - length);
}

/** One live worker slot whose queue holds `cap` records, on real rings; nothing reads them here. */
function dispatcherWithCap(cap: number) {
  const slot = newWorkerSlot(
    0,
    new ByteRing(ByteRing.allocate(1 << 16)),
    new ByteRing(ByteRing.allocate(1 << 16)),
    cap,
  );
  slot.alive = true;
  /** The worker finished everything it had queued: room for `cap` more. */
  const finishAll = () => {
    slot.queued = 0;
  };
  return { dispatcher: new InputDispatcher([slot]), slot, finishAll };
}

/** `count` live worker slots whose queues hold `cap` records each, on real rings. */
function slotsWithCap(count: number, cap: number) {
  return Array.from({ length: count }, (_, index) => {
    const slot = newWorkerSlot(
      index,
      new ByteRing(ByteRing.allocate(1 << 16)),
      new ByteRing(ByteRing.allocate(1 << 16)),
      cap,
    );
    slot.alive = true;
    return slot;
  });
}

describe("InputDispatcher", () => {
  test("while several workers have nothing to do, each gets a record before any gets a second", () => {
    // 2 ms items: queues of 6. Three records into two idle workers: both start at once.
    const slow = slotsWithCap(2, 6);
    new InputDispatcher(slow).dispatch(feedBlob(1, 3));
    expect(slow.map((slot) => slot.queued)).toEqual([1, 2]);
    // Not measured yet (queues of 16): the same, over three.
    const fresh = slotsWithCap(3, 16);
    new InputDispatcher(fresh).dispatch(feedBlob(1, 4));
    expect(fresh.map((slot) => slot.queued)).toEqual([1, 1, 2]);
  });

  test("once none is idle, records go a span at a time to the least loaded", () => {
    const fast = slotsWithCap(2, 400);
    new InputDispatcher(fast).dispatch(feedBlob(1, 100));
    expect(fast.map((slot) => slot.queued)).toEqual([1 + 35, 64]); // one to start it, then spans
    const busy = slotsWithCap(2, 400);
    busy[0]!.queued = 10;
    busy[1]!.queued = 20;
    new InputDispatcher(busy).dispatch(feedBlob(1, 30));
    expect(busy.map((slot) => slot.queued)).toEqual([40, 20]); // one span of 30
  });

  test("records beyond the workers' queue caps wait, in order, and go in as room comes", () => {
    const { dispatcher, slot, finishAll } = dispatcherWithCap(2);
    dispatcher.dispatch(feedBlob(1, 5));
    expect(slot.queued).toBe(2);
    expect(dispatcher.waiting).toBe(true);
    finishAll();
    dispatcher.dispatchBacklog();
    expect(slot.queued).toBe(2);
    finishAll();
    dispatcher.dispatchBacklog();
    expect(slot.queued).toBe(1);
    expect(dispatcher.waiting).toBe(false);
  });

  test("a backlog stands when it waited the whole time between two asks; one drained meanwhile does not", () => {
    const { dispatcher, finishAll } = dispatcherWithCap(2);
    expect(dispatcher.standing()).toBe(false); // nothing waits
    dispatcher.dispatch(feedBlob(1, 7)); // 2 in the queue, 5 wait
    expect(dispatcher.standing()).toBe(false); // it was empty earlier in this period
    finishAll();
    dispatcher.dispatchBacklog(); // 3 still wait: the backlog never emptied
    expect(dispatcher.standing()).toBe(true);
    expect(dispatcher.standing()).toBe(true);
    finishAll();
    dispatcher.dispatchBacklog(); // 1 waits
    finishAll();
    dispatcher.dispatchBacklog(); // empty now, if only for a moment…
    dispatcher.dispatch(feedBlob(8, 4)); // …before the next frame's items wait again
    expect(dispatcher.waiting).toBe(true);
    expect(dispatcher.standing()).toBe(false);
    expect(dispatcher.standing()).toBe(true);
    dispatcher.clear();
    expect(dispatcher.standing()).toBe(false);
  });
});
