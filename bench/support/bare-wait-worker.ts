/** One thread of bare-waits.ts: counts `Atomics.wait`s of `ms` between `startAt` and `endAt`. */
const word = new Int32Array(new SharedArrayBuffer(4));
const port = globalThis as unknown as {
  onmessage: ((event: MessageEvent<{ ms: number; startAt: number; endAt: number }>) => void) | null;
  postMessage(waits: number): void;
};
port.onmessage = (event) => {
  const { ms, startAt, endAt } = event.data;
  while (Date.now() < startAt) Atomics.wait(word, 0, 0, 1);
  let waits = 0;
  while (Date.now() < endAt) {
    Atomics.wait(word, 0, 0, ms);
    waits++;
  }
  port.postMessage(waits);
};
