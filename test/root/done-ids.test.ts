import { describe, expect, test } from "bun:test";
import { RecordBatchBuilder, encode } from "../../src/protocol/codec.ts";
import { DoneList, RecordKind } from "../../src/protocol/record.ts";
import { DoneIds } from "../../src/root/done-ids.ts";

// The Done ids of one results frame, as exactly-once delivery asks of each output (src/root/done-ids.ts).

/** A results blob: an output for each id of `outputs`, then one Done record per list of `done`. */
function blob(outputs: number[], ...done: number[][]): Uint8Array {
  const batch = new RecordBatchBuilder();
  for (const id of outputs) batch.append(RecordKind.Output, 0, 0, id, encode(id));
  for (const ids of done) {
    const list = new DoneList();
    for (const id of ids) list.add(id, 1);
    batch.append(RecordKind.Done, 0, 0, list.lastId, list.take().slice());
  }
  return batch.takeRecords();
}

/** Which of `ids` the set says are done. */
const doneOf = (set: DoneIds, ids: number[]) => ids.filter((id) => set.has(id));

describe("DoneIds", () => {
  test("holds the ids of every Done record of the frame, and nothing else", () => {
    const set = new DoneIds();
    set.fill(blob([5, 6, 7, 9], [5, 7], [9, 12]));
    expect(doneOf(set, [0, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13])).toEqual([5, 7, 9, 12]);
  });

  test("the next frame's ids replace the last frame's", () => {
    const set = new DoneIds();
    set.fill(blob([], [100, 101, 102]));
    set.fill(blob([], [2_000, 2_003]));
    expect(doneOf(set, [100, 101, 102, 2_000, 2_001, 2_003])).toEqual([2_000, 2_003]);
    set.fill(blob([1, 2]));
    expect(doneOf(set, [1, 2, 2_000, 2_003])).toEqual([]);
  });

  test("ids spread far apart (a long item beside fresh ones), the largest ids, and many ids", () => {
    const set = new DoneIds();
    const far = [3, 40_000_000, 0xffff_fffe, 0xffff_ffff];
    set.fill(blob([], far));
    expect(doneOf(set, [2, ...far, 4, 40_000_001])).toEqual(far);
    const many = Array.from({ length: 5000 }, (_, i) => 1_000_000 + i * 3);
    const lists = Array.from({ length: 5 }, (_, i) => many.slice(i * 1024, (i + 1) * 1024)); // a Done holds 1024
    set.fill(blob([], ...lists));
    expect(doneOf(set, many.concat(many.map((id) => id + 1)))).toEqual(many);
  });
});
