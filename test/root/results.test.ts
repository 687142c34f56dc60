import { describe, expect, test } from "bun:test";
import { RecordBatchBuilder, encode } from "../../src/protocol/codec.ts";
import { DoneList, RecordKind, type TaskErrorReport } from "../../src/protocol/record.ts";
import { ResultPump, type ResultSink } from "../../src/root/results.ts";

// The root's result pump on its own, fed results blobs as nodes send them (src/root/results.ts).

type Event = string;

/** A results blob: outputs (by value), error reports, and a Done for `done` ids, in this order. */
function blob(
  outputs: unknown[],
  done: number[] = [],
  errors: Array<[RecordKind, number, TaskErrorReport]> = [],
): Uint8Array {
  const batch = new RecordBatchBuilder();
  for (const value of outputs) batch.append(RecordKind.Output, 0, 0, 1, encode(value));
  for (const [kind, id, report] of errors) batch.append(kind, 0, 0, id, encode(report));
  if (done.length > 0) {
    const list = new DoneList();
    for (const id of done) list.add(id, 1);
    batch.append(RecordKind.Done, 0, 0, list.lastId, list.take());
  }
  return batch.takeRecords();
}

/** A sink that writes down what it is handed, in order; `hold` makes one output's handler wait. */
function recorder(hold?: { value: unknown; until: Promise<void> }) {
  const events: Event[] = [];
  const sink: ResultSink<string> = {
    output(value) {
      events.push(`out ${JSON.stringify(value)}`);
      return hold !== undefined && value === hold.value ? hold.until : undefined;
    },
    taskError(source, item, report, failed) {
      events.push(`${failed ? "failed" : "error"} ${source} ${item} ${report.task}: ${report.message}`);
    },
    done(source, ids) {
      events.push(`done ${source} ${ids.join(",")}`);
    },
    handled(source, bytes) {
      events.push(`handled ${source} ${bytes}`);
    },
    partial(source, bytes, start, end) {
      events.push(`partial ${source} ${end - start} bytes`);
    },
  };
  return { events, sink };
}

describe("ResultPump", () => {
  test("hands out outputs, then Done, frame by frame in arrival order, and gives each frame's bytes back after it", async () => {
    const { events, sink } = recorder();
    const pump = new ResultPump(sink);
    pump.push("a", blob([1, 2], [10, 11]), 100);
    pump.push("b", blob(["x"], [20]), 50);
    pump.push("a", blob([3], [12]), 70);
    await pump.whenIdle();
    expect(events).toEqual([
      "out 1",
      "out 2",
      "done a 10,11",
      "handled a 100",
      'out "x"',
      "done b 20",
      "handled b 50",
      "out 3",
      "done a 12",
      "handled a 70",
    ]);
    expect(pump.idle).toBe(true);
  });

  test("an output handler's promise holds every later result, in its frame and behind it, until it settles", async () => {
    let open: () => void = () => {};
    const gate = new Promise<void>((resolve) => (open = resolve));
    const { events, sink } = recorder({ value: 2, until: gate });
    const pump = new ResultPump(sink);
    let idleCalls = 0;
    pump.onIdle = () => idleCalls++;
    pump.push("a", blob([1, 2, 3], [10]), 100);
    pump.push("b", blob([4], [20, 21]), 50);
    // A turn of the event loop (the pump yields with setImmediate): nothing more comes out while the gate is shut.
    await new Promise((resolve) => setImmediate(resolve));
    expect(events).toEqual(["out 1", "out 2"]);
    expect(pump.idle).toBe(false);
    // Done records behind the handler are known, not handled: a lost node's finished items.
    expect(pump.pendingDone("b")).toEqual([20, 21]);
    expect(pump.pendingDone("a")).toEqual([10]);
    open();
    await pump.whenIdle();
    expect(events).toEqual([
      "out 1",
      "out 2",
      "out 3",
      "done a 10",
      "handled a 100",
      "out 4",
      "done b 20,21",
      "handled b 50",
    ]);
    expect(idleCalls).toBe(1);
    expect(pump.pendingDone("b")).toEqual([]);
  });

  test("task errors and given-up items go to taskError; an undecodable output is an error, not a crash", async () => {
    const { events, sink } = recorder();
    const pump = new ResultPump(sink);
    const bad = new RecordBatchBuilder();
    bad.append(RecordKind.Output, 0, 0, 7, new Uint8Array([0x92, 0x01])); // an array of two that holds one
    pump.push("n", bad.takeRecords(), 10);
    pump.push(
      "n",
      blob(
        [],
        [],
        [
          [RecordKind.TaskError, 8, { task: "parse", message: "bad line" }],
          [RecordKind.Failed, 9, { task: "hog", message: "gave up" }],
        ],
      ),
      20,
    );
    await pump.whenIdle();
    expect(events[0]).toMatch(/^error n 7 \(root\): an output could not be decoded: /);
    expect(events.slice(1)).toEqual([
      "handled n 10",
      "error n 8 parse: bad line",
      "failed n 9 hog: gave up",
      "handled n 20",
    ]);
  });

  test("clear() forgets the frames waiting behind a busy handler, not the one it is on", async () => {
    let open: () => void = () => {};
    const gate = new Promise<void>((resolve) => (open = resolve));
    const { events, sink } = recorder({ value: "slow", until: gate });
    const pump = new ResultPump(sink);
    pump.push("a", blob(["slow", "next"]), 10);
    pump.push("a", blob(["dropped"]), 20);
    pump.clear();
    open();
    await pump.whenIdle();
    expect(events).toEqual(['out "slow"', 'out "next"', "handled a 10"]);
  });

  test("a long burst gives the event loop turns: a timer set at its start fires before the pump is done", async () => {
    // 20 frames, each ~2 ms of handling: far past the pump's 8 ms slice, on any machine. They queue
    // behind a first frame whose handler waits, so that the pump runs them all in one go.
    let open: () => void = () => {};
    const gate = new Promise<void>((resolve) => (open = resolve));
    let handled = 0;
    let timerFiredAfter = -1;
    const pump = new ResultPump<string>({
      output(value) {
        if (value === "gate") return gate;
        const end = performance.now() + 0.1;
        while (performance.now() < end);
      },
      taskError() {},
      done() {},
      handled() {
        handled++;
      },
      partial() {},
    });
    pump.push("a", blob(["gate"]), 1);
    for (let frame = 0; frame < 20; frame++) pump.push("a", blob(Array.from({ length: 20 }, (_, i) => i)), 1);
    setTimeout(() => (timerFiredAfter = handled), 0);
    open();
    await pump.whenIdle();
    expect(handled).toBe(21);
    expect(timerFiredAfter).toBeGreaterThanOrEqual(1);
    expect(timerFiredAfter).toBeLessThan(21);
  });
});
