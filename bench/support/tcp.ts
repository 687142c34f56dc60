/**
 * Loopback TCP for the framing bench: a sender writing feed frames through raw Bun sockets or pcluster's
 * Connection, and a receiver that listens once for every round and times each run.
 *
 * raw:    Bun socket → Bun.listen counting bytes (the ceiling)
 * recv:   Bun socket → Connection (FrameDecoder + parseMessage): the node's receive path alone
 * framed: Connection.sendFrame → Connection: the root's send path and the node's receive path
 */
import { connect, listen } from "../../src/protocol/connection.ts";
import type { Message } from "../../src/protocol/messages.ts";

export type TcpMode = "raw" | "recv" | "framed";
export const TCP_MODES: readonly TcpMode[] = ["raw", "recv", "framed"];

/** How many frames, cycling through `frames`, make at least `bytes`, and their exact bytes. */
export function framesFor(frames: readonly Uint8Array[], bytes: number): { count: number; bytes: number } {
  let count = 0;
  let total = 0;
  while (total < bytes) total += frames[count++ % frames.length]!.length;
  return { count, bytes: total };
}

export interface TcpResult {
  seconds: number;
  bytes: number;
  items: number;
}

/** In the sender process: connects, writes `count` frames, closes. */
export async function send(mode: TcpMode, port: number, count: number, frames: readonly Uint8Array[]): Promise<void> {
  if (mode === "framed") {
    const connection = await connect({ hostname: "127.0.0.1", port });
    for (let k = 0; k < count; k++) {
      connection.sendFrame(frames[k % frames.length]!);
      await connection.writable();
    }
    connection.close();
    await connection.closed;
    return;
  }
  await new Promise<void>((resolve, reject) => {
    let next = 0;
    let pending: Uint8Array | undefined;
    const pump = (socket: { write(bytes: Uint8Array): number; end(): void }) => {
      for (;;) {
        if (pending === undefined) {
          if (next === count) return socket.end();
          pending = frames[next++ % frames.length]!;
        }
        const written = socket.write(pending);
        if (written < 0) return;
        if (written < pending.length) {
          pending = pending.subarray(written);
          return; // until drain
        }
        pending = undefined;
      }
    };
    Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        open: pump,
        drain: pump,
        data() {},
        close: () => resolve(),
        error: (_socket, error) => reject(error),
        connectError: (_socket, error) => reject(error),
      },
    }).catch(reject);
  });
}

/** The receiving side, listening once for all rounds; `expect` arms it for the next connection. */
export class TcpReceiver {
  /** Items in each frame the sender sends (to turn frames into items). */
  readonly #itemsPerFrame: number;
  #done: ((result: TcpResult) => void) | undefined;
  #target = { bytes: 0, frames: 0 };
  #start = 0;
  #bytes = 0;
  #frames = 0;
  readonly #raw = Bun.listen<undefined>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open: () => this.#opened(),
      data: (_socket, chunk) => {
        this.#bytes += chunk.byteLength;
        if (this.#bytes >= this.#target.bytes) this.#finish(this.#target.frames);
      },
      end: (socket) => void socket.end(),
    },
  });
  readonly #framed = listen({ hostname: "127.0.0.1", port: 0 }, (connection) => {
    this.#opened();
    connection.onMessage = (message: Message) => {
      if (message.t !== "feed") throw new Error(`unexpected "${message.t}" message`);
      if (++this.#frames === this.#target.frames) this.#finish(this.#frames);
    };
  });

  constructor(itemsPerFrame: number) {
    this.#itemsPerFrame = itemsPerFrame;
  }

  portFor(mode: TcpMode): number {
    return mode === "raw" ? this.#raw.port : this.#framed.port;
  }

  expect(bytes: number, frames: number): Promise<TcpResult> {
    this.#target = { bytes, frames };
    this.#bytes = 0;
    this.#frames = 0;
    return new Promise((resolve) => (this.#done = resolve));
  }

  stop(): void {
    this.#raw.stop(true);
    this.#framed.stop(true);
  }

  #opened(): void {
    this.#start = Bun.nanoseconds();
  }

  #finish(frames: number): void {
    const done = this.#done;
    this.#done = undefined;
    done?.({
      seconds: (Bun.nanoseconds() - this.#start) / 1e9,
      bytes: this.#target.bytes,
      items: frames * this.#itemsPerFrame,
    });
  }
}
