import { describe, expect, test } from "bun:test";
import { RecordBatchBuilder } from "../../src/protocol/codec.ts";
import { DoneList, RecordKind } from "../../src/protocol/record.ts";
import { KeptBuffers } from "../../src/protocol/kept-buffers.ts";
import { ResultPump, type ResultSink } from "../../src/root/results.ts";

/**
 * The root's side of exactly-once, record by record (the end-to-end tests with real nodes are in
 * exactly-once.test.ts): what a results frame hands out at once, what waits for its item's Done, and
 * what is dropped.
 */

type Frame = Array<
  [kind: "out", id: number, value: unknown] | [kind: "done", ids: number[]] | [kind: "retract", id: number]
>;

function blob(records: Frame): Uint8Array {
  const batch = new RecordBatchBuilder(1024);
  for (const record of records) {
    if (record[0] === "out") batch.appendValue(RecordKind.Output, 0, 0, record[1], record[2]);
    else if (record[0] === "retract") batch.append(RecordKind.Retract, 0, 0, record[1], new Uint8Array(0));
    else {
      const done = new DoneList(64);
      for (const id of record[1]) done.add(id, 0);
      batch.append(RecordKind.Done, 0, 0, done.lastId, done.take().slice());
    }
  }
  return batch.takeRecords();
}

function pump(exactlyOnce: boolean, maxHeldBytes?: number) {
  const seen: unknown[] = [];
  const errors: string[] = [];
  const sink: ResultSink<string> = {
    output: (value) => void seen.push(value),
    taskError: (_source, item, report) => void errors.push(`${item}: ${report.message}`),
    done: (_source, ids) => void seen.push(`done ${ids.join(",")}`),
    partial: () => undefined,
    handled: () => {},
  };
  const results = new ResultPump<string>(sink);
  results.configure(exactlyOnce, maxHeldBytes);
  return { results, seen, errors };
}

describe("exactly-once at the root", () => {
  test("outputs whose Done is in the same frame go straight out; the others wait for their Done", async () => {
    const { results, seen } = pump(true);
    results.push(
      "a",
      blob([
        ["out", 1, "1a"],
        ["out", 2, "2a"],
        ["done", [1]],
      ]),
      0,
    );
    await results.whenIdle();
    expect(seen).toEqual(["1a", "done 1"]);
    expect(results.heldBytes).toBeGreaterThan(0);
    results.push(
      "a",
      blob([
        ["out", 2, "2b"],
        ["out", 3, "3a"],
        ["done", [2, 3]],
      ]),
      0,
    );
    await results.whenIdle();
    // Item 3's output goes at once; item 2's come out, in their order, when its Done is reached.
    expect(seen).toEqual(["1a", "done 1", "3a", "2a", "2b", "done 2,3"]);
    expect(results.heldBytes).toBe(0);
  });

  test("a Retract drops what its item gave so far; the lost node's held outputs are dropped after its frames", async () => {
    const { results, seen } = pump(true);
    results.push(
      "a",
      blob([
        ["out", 1, "dead attempt"],
        ["retract", 1],
        ["out", 1, "retry"],
        ["out", 2, "2a"],
      ]),
      0,
    );
    results.push("b", blob([["out", 7, "7a"]]), 0);
    results.endOf("b"); // node b is lost: item 7 runs again elsewhere
    results.push("a", blob([["done", [1, 2]]]), 0);
    await results.whenIdle();
    expect(seen).toEqual(["retry", "2a", "done 1,2"]);
    expect(results.heldBytes).toBe(0);
  });

  test("held outputs past maxHeldBytes: none of that item's outputs, and one error naming the limit at its Done", async () => {
    const { results, seen, errors } = pump(true, 100);
    results.push(
      "a",
      blob([
        ["out", 1, "x".repeat(60)],
        ["out", 2, "small"],
      ]),
      0,
    );
    results.push(
      "a",
      blob([
        ["out", 1, "x".repeat(60)],
        ["done", [1, 2]],
      ]),
      0,
    );
    await results.whenIdle();
    expect(seen).toEqual(["small", "done 1,2"]);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/^1: its outputs went past the 100 bytes .*maxHeldBytes/);
  });

  test("at-least-once hands every output out as it comes and ignores Retract", async () => {
    const { results, seen } = pump(false);
    results.push(
      "a",
      blob([
        ["out", 1, "first"],
        ["retract", 1],
        ["out", 1, "again"],
      ]),
      0,
    );
    await results.whenIdle();
    expect(seen).toEqual(["first", "again"]);
  });
});

describe("results joined in kept memory (messages of megabytes)", () => {
  /** A results frame as a node's message sent in parts arrives: joined in memory taken from `memory`. */
  function joined(memory: KeptBuffers, records: Frame): Uint8Array {
    const bytes = blob(records);
    const frame = memory.take(bytes.length);
    frame.set(bytes);
    return frame;
  }
  const big = (fill: string) => fill.repeat(200_000);

  test("a frame's memory is free once it is handled, unless an output of it waits for its Done; then once that is out", async () => {
    const memory = new KeptBuffers((size) => new ArrayBuffer(size));
    const seen: unknown[] = [];
    const sink: ResultSink<string> = {
      output: (value) => void seen.push(value),
      taskError: () => undefined,
      done: (_source, ids) => void seen.push(`done ${ids.join(",")}`),
      partial: () => undefined,
      handled: () => {},
    };
    const results = new ResultPump<string>(sink, memory);
    results.configure(true);
    const held = joined(memory, [["out", 1, big("a")]]); // its Done comes later: held, as a view
    results.push("a", held, 0);
    await results.whenIdle();
    expect(memory.spareBytes).toBe(0);
    // Written again now, the held output would change: it must not be handed out for reuse.
    expect(memory.take(held.buffer.byteLength).buffer === held.buffer).toBe(false); // (left to the GC)
    const done = joined(memory, [["done", [1]]]);
    results.push("a", done, 0);
    await results.whenIdle();
    expect(seen).toEqual([big("a"), "done 1"]);
    expect(memory.take(held.length).buffer === held.buffer).toBe(true); // free once handed out

    // Dropped rather than handed out — a Retract, a lost node — lets it go too.
    const retracted = joined(memory, [["out", 2, big("b")]]);
    results.push("a", retracted, 0);
    results.push("a", joined(memory, [["retract", 2]]), 0);
    await results.whenIdle();
    const lost = joined(memory, [["out", 3, big("c")]]); // written where the retracted output was
    expect(lost.buffer === retracted.buffer).toBe(true);
    results.push("b", lost, 0);
    results.endOf("b");
    await results.whenIdle();
    expect(memory.take(lost.length).buffer === lost.buffer).toBe(true);
    expect(seen).toEqual([big("a"), "done 1"]);
  });
});
