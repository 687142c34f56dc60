import { describe, expect, test } from "bun:test";
import { RecordKind, setRecordKind } from "../../src/protocol/record.ts";
import { DONE_KEYS_PRUNE_AT, newWorkerSlot, noteDone } from "../../src/node/engine/worker-slot.ts";
import { ByteRing } from "../../src/node/ring.ts";
import { RunningItems } from "../../src/node/running-items.ts";
import { itemKey } from "../../src/node/worker-messages.ts";

// A worker running items out of order marks an item's input Void only after it committed the item's
// Done; the engine keeps the keys of the Done records it took, so that a worker dying in between does
// not get a finished item run again (see concurrency.test.ts). Here: that the keys stay bounded.

function slotWithInput(ids: number[]) {
  const input = new ByteRing(ByteRing.allocate(1 << 16));
  const output = new ByteRing(ByteRing.allocate(1 << 16));
  const slot = newWorkerSlot(0, input, output, 16, 4, new RunningItems(RunningItems.allocate(4)));
  let position = input.writePosition;
  const offsets = new Map<number, number>();
  for (const id of ids) {
    offsets.set(id, input.offsetOf(position));
    position = input.tryWrite(position, RecordKind.Input, 0, 0, id, new Uint8Array([0xc0]));
  }
  input.commit(position);
  return { slot, offsets };
}

describe("the Done keys of a worker running items out of order", () => {
  test("are kept until there are many, then only those of items still in the input ring and not Void", () => {
    const { slot, offsets } = slotWithInput([100_001, 100_002, 100_003]);
    setRecordKind(slot.input.view, offsets.get(100_002)!, RecordKind.Void); // its worker marked it done
    noteDone(slot, itemKey(0, 100_001));
    noteDone(slot, itemKey(0, 100_002));
    for (let id = 1; slot.doneKeys.size < DONE_KEYS_PRUNE_AT - 1; id++) noteDone(slot, itemKey(0, id)); // released long ago
    expect(slot.doneKeys.size).toBe(DONE_KEYS_PRUNE_AT - 1);
    noteDone(slot, itemKey(0, 50_000)); // the one that makes it prune
    expect([...slot.doneKeys]).toEqual([itemKey(0, 100_001)]);
  });
});
