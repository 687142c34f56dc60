// A Worker thread that echoes every record of one ByteRing into another, waiting for data and for room
// as the engine's workers do: each wait looks again after WAKE_CHECK_MS at most, and one that ends so
// instead of by a wake-up counts as timed out. When its input is closed and read to the end, it posts
// what its waits saw and exits. See test/node/ring.test.ts.
import { RECORD_HEADER_BYTES } from "../../src/protocol/record.ts";
import { ByteRing, WAKE_CHECK_MS } from "../../src/node/ring.ts";

declare const self: Worker;

export interface EchoReport {
  records: number;
  dataWaits: number;
  roomWaits: number;
  timedOut: number;
}

const NO_TIMEOUT_MS = WAKE_CHECK_MS;

self.onmessage = async (event: MessageEvent<{ input: SharedArrayBuffer; output: SharedArrayBuffer }>) => {
  const input = new ByteRing(event.data.input);
  const output = new ByteRing(event.data.output);
  const report: EchoReport = { records: 0, dataWaits: 0, roomWaits: 0, timedOut: 0 };
  const waited = async (wait: Promise<unknown> | undefined) => {
    if (wait !== undefined && (await wait) === "timed-out") report.timedOut++;
    return wait !== undefined;
  };
  let readAt = input.readPosition;
  let writeAt = output.writePosition;
  for (;;) {
    const at = input.peek(readAt);
    if (at < 0) {
      if (input.closed) break;
      if (await waited(input.waitForData(readAt, NO_TIMEOUT_MS))) report.dataWaits++;
      continue;
    }
    const offset = input.offsetOf(at);
    const size = input.recordSize(offset);
    const kind = input.view.getUint8(offset);
    const id = input.view.getUint32(offset + 4, true);
    for (;;) {
      const next = output.tryWrite(writeAt, kind, 0, 0, id, input.data, offset + RECORD_HEADER_BYTES, offset + size);
      if (next >= 0) {
        writeAt = next;
        output.commit(next);
        break;
      }
      if (await waited(output.waitForRoom(output.readPosition, NO_TIMEOUT_MS))) report.roomWaits++;
    }
    readAt = (at + size) >>> 0;
    input.release(readAt);
    report.records++;
  }
  self.postMessage(report);
};
