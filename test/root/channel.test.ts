import { describe, expect, test } from "bun:test";
import { OutputChannel } from "../../src/root/channel.ts";

/** The bounded queue behind the root's async iterable of outputs (src/root/channel.ts). */
describe("OutputChannel", () => {
  test("values come out in order; the end ends the iteration after the last one", async () => {
    const channel = new OutputChannel<number>(4);
    expect(channel.push(1)).toBeUndefined();
    expect(channel.push(2)).toBeUndefined();
    channel.end();
    const seen: number[] = [];
    for await (const value of channel) seen.push(value);
    expect(seen).toEqual([1, 2]);
  });

  test("a push that fills it holds its producer until the consumer makes room", async () => {
    const channel = new OutputChannel<number>(3);
    expect(channel.push(1)).toBeUndefined();
    expect(channel.push(2)).toBeUndefined();
    const held = channel.push(3);
    expect(held).toBeInstanceOf(Promise);
    let released = false;
    void held!.then(() => (released = true));
    const reader = channel[Symbol.asyncIterator]();
    await Promise.resolve();
    expect(released).toBe(false);
    expect(await reader.next()).toEqual({ value: 1, done: false });
    await held;
    expect(released).toBe(true);
    expect(await reader.next()).toEqual({ value: 2, done: false });
    expect(await reader.next()).toEqual({ value: 3, done: false });
  });

  test("it is full at maxBytes of its values' sizes too; one value larger than that still goes, alone", async () => {
    const channel = new OutputChannel<string>(1024, 100);
    expect(channel.push("a", 60)).toBeUndefined();
    const held = channel.push("b", 60); // 120 bytes waiting: full, though 2 values are far below 1024
    expect(held).toBeInstanceOf(Promise);
    let released = false;
    void held!.then(() => (released = true));
    const reader = channel[Symbol.asyncIterator]();
    expect(await reader.next()).toEqual({ value: "a", done: false }); // 60 bytes left: room again
    await held;
    expect(released).toBe(true);
    expect(await reader.next()).toEqual({ value: "b", done: false });
    const huge = channel.push("c", 1000);
    expect(huge).toBeInstanceOf(Promise);
    expect(await reader.next()).toEqual({ value: "c", done: false });
    await huge;
    expect(channel.push("d", 10)).toBeUndefined(); // nothing waits: the sizes taken out were all given back
  });

  test("a consumer waiting on an empty channel wakes for the next value, and for the end", async () => {
    const channel = new OutputChannel<string>();
    const reader = channel[Symbol.asyncIterator]();
    const first = reader.next();
    channel.push("a");
    expect(await first).toEqual({ value: "a", done: false });
    const last = reader.next();
    channel.end();
    expect(await last).toEqual({ value: undefined, done: true });
  });

  test("a failure is thrown to the consumer after the values before it", async () => {
    const channel = new OutputChannel<number>();
    channel.push(1);
    channel.fail(new Error("node lost"));
    const seen: number[] = [];
    const iterate = async () => {
      for await (const value of channel) seen.push(value);
    };
    await expect(iterate()).rejects.toThrow("node lost");
    expect(seen).toEqual([1]);
  });

  test("an abort is thrown at the consumer's next step: what waits is dropped, held producers go, later pushes are dropped", async () => {
    const channel = new OutputChannel<number>(2);
    const reader = channel[Symbol.asyncIterator]();
    channel.push(1);
    const held = channel.push(2);
    expect(await reader.next()).toEqual({ value: 1, done: false });
    channel.push(3);
    channel.abort(new Error("enough"));
    await held; // a producer held by the full channel is let go
    expect(channel.push(4)).toBeUndefined();
    await expect(reader.next()).rejects.toThrow("enough");

    // A consumer parked on an empty channel wakes to the abort.
    const idle = new OutputChannel<number>();
    const waiting = idle[Symbol.asyncIterator]().next();
    idle.abort(new Error("timed out"));
    await expect(waiting).rejects.toThrow("timed out");
  });

  test("100 000 values through a channel of 16: every one once, in order, producers held all along", async () => {
    const channel = new OutputChannel<number>(16);
    let holds = 0;
    const producer = (async () => {
      for (let i = 0; i < 100_000; i++) {
        const room = channel.push(i);
        if (room !== undefined) {
          holds++;
          await room;
        }
      }
      channel.end();
    })();
    let expected = 0;
    let outOfOrder = 0;
    for await (const value of channel) if (value !== expected++) outOfOrder++;
    await producer;
    expect(outOfOrder).toBe(0);
    expect(expected).toBe(100_000);
    expect(holds).toBeGreaterThan(1000);
  });
});
