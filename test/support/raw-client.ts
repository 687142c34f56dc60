import type { Socket } from "bun";
import { encode } from "../../src/protocol/codec.ts";
import { FrameDecoder, frameOf } from "../../src/protocol/frame.ts";
import { type Message, parseMessage } from "../../src/protocol/messages.ts";

/**
 * A bare TCP client that speaks whatever bytes a test gives it and records the frames it gets back, to
 * check how servers answer bad input. It knows nothing of the protocol beyond framing.
 */
export class RawClient {
  readonly messages: Message[] = [];
  closed!: Promise<void>;
  #socket!: Socket<undefined>;
  #waiters: Array<() => void> = [];
  #isClosed = false;

  private constructor() {}

  static async connect(port: number, hostname = "127.0.0.1"): Promise<RawClient> {
    const client = new RawClient();
    const decoder = new FrameDecoder(1 << 30);
    let resolveClosed!: () => void;
    client.closed = new Promise<void>((resolve) => (resolveClosed = resolve));
    client.#socket = await Bun.connect({
      hostname,
      port,
      socket: {
        data(_socket, chunk) {
          decoder.push(chunk, (body) => {
            client.messages.push(parseMessage(body));
            client.#notify();
          });
        },
        close() {
          client.#isClosed = true;
          resolveClosed();
          client.#notify();
        },
        error() {},
      },
    });
    return client;
  }

  get isClosed(): boolean {
    return this.#isClosed;
  }

  write(bytes: Uint8Array | string): void {
    this.#socket.write(bytes);
  }

  send(message: unknown): void {
    this.#socket.write(frameOf(encode(message)));
  }

  /** Waits (bounded) for a message matching `predicate`. */
  async waitFor(predicate: (message: Message) => boolean, timeoutMs = 5000): Promise<Message> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.messages.find(predicate);
      if (found) return found;
      if (this.#isClosed)
        throw new Error(`closed without the expected message; got ${JSON.stringify(this.messages.map((m) => m.t))}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out; got ${JSON.stringify(this.messages.map((m) => m.t))}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Waits (bounded) until the server has closed the connection. */
  async waitClosed(timeoutMs = 5000): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error("server did not close the connection")), timeoutMs);
    });
    try {
      await Promise.race([this.closed, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  close(): void {
    this.#socket.end();
  }

  #notify(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }
}
