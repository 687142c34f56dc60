// Writes `count` small records into a ByteRing as fast as the consumer frees room.
import { ByteRing } from "../../src/node/ring.ts";

(globalThis as unknown as { onmessage: unknown }).onmessage = async (
  event: MessageEvent<{ buffer: SharedArrayBuffer; count: number }>,
) => {
  const ring = new ByteRing(event.data.buffer);
  const payload = new Uint8Array(16).fill(7);
  let position = ring.writePosition;
  let written = 0;
  while (written < event.data.count) {
    const next = ring.tryWrite(position, 1, 0, 0, written, payload);
    if (next < 0) {
      ring.commit(position);
      const wait = ring.waitForRoom(ring.readPosition);
      if (wait !== undefined) await wait;
      continue;
    }
    position = next;
    written++;
    if ((written & 255) === 0) ring.commit(position);
  }
  ring.commit(position);
  postMessage("done");
};
