// A worker thread that takes and frees places in a shared RunningItems table as fast as it can, as a
// worker running many short items at once does, until told to stop (see running-items.test.ts).
// `stop`: [0] is set to stop it; [1] counts its rounds so far.
import { RunningItems } from "../../src/node/running-items.ts";

const port = globalThis as unknown as {
  onmessage: ((event: MessageEvent<{ buffer: SharedArrayBuffer; stop: SharedArrayBuffer }>) => void) | null;
  postMessage(message: unknown): void;
};

port.onmessage = (event) => {
  const table = new RunningItems(event.data.buffer);
  const stop = new Int32Array(event.data.stop);
  const places: number[] = [];
  let rounds = 0;
  for (let position = 0; Atomics.load(stop, 0) === 0; position++) {
    table.clear(); // a replacement worker starts on the same table
    for (let i = 0; i < 8; i++) places.push(table.add(position * 8 + i));
    while (places.length > 0) table.remove(places.pop()!);
    rounds++;
    Atomics.store(stop, 1, rounds); // how far it got, for the reader to see that it runs
  }
  port.postMessage(rounds);
};
