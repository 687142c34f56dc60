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

describe("InputDispatcher", () => {
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
