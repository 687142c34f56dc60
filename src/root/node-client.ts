import { ConnectionClosedError, type PclusterError, TimeoutError } from "../errors.ts";
import type { Endpoint } from "../protocol/address.ts";
import { dial } from "../protocol/handshake.ts";
import type { Connection } from "../protocol/connection.ts";
import { blobFrameBytes } from "../protocol/frame.ts";
import type { Message } from "../protocol/messages.ts";
import type { NodeStatus } from "../protocol/pipeline.ts";
import type { ClientTls } from "../protocol/tls.ts";
import type { RootOptions } from "./options.ts";
import type { FeedTarget } from "./scheduler.ts";

/**
 * Dials a node, asks for its status once and hangs up: a look, not a session (no heartbeat). Throws what
 * the dial throws (`AuthError`, `VersionMismatchError`, a refused or timed-out connection) or the request.
 * `helloTimeoutMs` bounds the wait for the node's greeting once connected (default `answerTimeoutMs`).
 */
export async function askNodeStatus(
  host: string,
  port: number,
  options: {
    token?: string;
    tls?: ClientTls;
    connectTimeoutMs: number;
    helloTimeoutMs?: number;
    answerTimeoutMs: number;
  },
): Promise<NodeStatus> {
  const { connection } = await dial({
    hostname: host,
    port,
    service: "node",
    token: options.token,
    tls: options.tls,
    connectTimeoutMs: options.connectTimeoutMs,
    timeoutMs: options.helloTimeoutMs ?? options.answerTimeoutMs,
  });
  try {
    return await connection.request<NodeStatus>("status", undefined, options.answerTimeoutMs);
  } finally {
    connection.close();
  }
}

/** How to reach a node: the root's own options for it. */
export type NodeClientOptions = Pick<
  RootOptions,
  "token" | "tls" | "connectTimeoutMs" | "heartbeatMs" | "heartbeatTimeoutMs"
>;

/**
 * `NodeClient`: the root's one persistent connection to one node — its commands, its pushes, and a
 * heartbeat that notices a node which stopped answering without closing its socket.
 */
export class NodeClient implements FeedTarget {
  /** Results from the node: records, its idle worker count, the frame's size (for credit). */
  onResults: (blob: Uint8Array, idle: number, frameBytes: number) => void = () => {};
  /** The node reset its pipeline on its own (e.g. it is shutting down). */
  onEvent: (name: string, data: unknown) => void = () => {};
  /** The connection is gone or the node stopped answering; called once. */
  onLost: (reason: PclusterError) => void = () => {};

  readonly #connection: Connection;
  readonly #options: NodeClientOptions;
  #heartbeat: ReturnType<typeof setInterval> | undefined;
  #lastAnswer = performance.now();
  #lost = false;
  #closing = false;

  private constructor(
    readonly endpoint: Endpoint,
    connection: Connection,
    options: NodeClientOptions,
  ) {
    this.#connection = connection;
    this.#options = options;
    connection.onMessage = (message) => this.#onMessage(message);
    connection.closed.then((reason) => {
      this.#stopHeartbeat();
      if (this.#closing) return;
      this.#markLost(reason ?? new ConnectionClosedError(`node ${endpoint.key} closed the connection`));
    });
  }

  /** Connects and runs the handshake. */
  static async connect(endpoint: Endpoint, options: NodeClientOptions = {}): Promise<NodeClient> {
    const { connection } = await dial({
      hostname: endpoint.host,
      port: endpoint.port,
      service: "node",
      token: options.token,
      tls: options.tls,
      connectTimeoutMs: options.connectTimeoutMs ?? 5000,
      timeoutMs: options.connectTimeoutMs ?? 5000,
      // Result frames are already bounded by credit; feed frames by the window.
      maxQueuedBytes: 16 * 1024 * 1024,
    });
    return new NodeClient(endpoint, connection, options);
  }

  get address(): string {
    return this.endpoint.key;
  }

  get isOpen(): boolean {
    return !this.#lost && !this.#closing && !this.#connection.isClosed;
  }

  request<T>(cmd: string, args?: unknown, timeoutMs?: number): Promise<T> {
    return this.#connection.request<T>(cmd, args, timeoutMs).then((answer) => {
      this.#lastAnswer = performance.now();
      return answer;
    });
  }

  sendFeed(frame: Uint8Array): void {
    this.#connection.sendFrame(frame);
  }

  /** Gives the node `bytes` more result credit. */
  credit(bytes: number): void {
    if (this.isOpen && bytes > 0) this.#connection.send({ t: "credit", bytes });
  }

  /** Lets the process exit while nothing is pending on this connection (and keeps it alive otherwise). */
  keepAlive(active: boolean): void {
    if (active) this.#connection.ref();
    else this.#connection.unref();
  }

  /** Pings the node; a node that answers nothing (not even results) for the timeout is lost. */
  startHeartbeat(): void {
    if (this.#heartbeat !== undefined) return;
    const every = this.#options.heartbeatMs ?? 2000;
    const timeout = this.#options.heartbeatTimeoutMs ?? 15_000;
    let lastTick = performance.now();
    this.#heartbeat = setInterval(() => {
      if (!this.isOpen) return this.#stopHeartbeat();
      const now = performance.now();
      const late = now - lastTick > every * 2;
      lastTick = now;
      // A tick that comes late means this process was busy (a handler that blocked): the node's answers
      // may be waiting unread in the socket. Judge only on a tick that came on time.
      if (late) this.#lastAnswer = Math.max(this.#lastAnswer, now - every);
      else if (now - this.#lastAnswer > timeout) {
        const reason = new TimeoutError(`node ${this.address} has not answered for ${timeout} ms`);
        this.#markLost(reason);
        this.#connection.destroy(reason);
        return;
      }
      this.request("ping", undefined, timeout).catch(() => {});
    }, every);
    this.#heartbeat.unref();
  }

  /** Closes the connection on purpose (no `onLost`). */
  close(): void {
    this.#closing = true;
    this.#stopHeartbeat();
    this.#connection.close();
  }

  #onMessage(message: Message): void {
    this.#lastAnswer = performance.now();
    if (message.t === "results") {
      // The node charges the whole frame to our credit; give back exactly that.
      this.onResults(
        message.blob,
        message.idle,
        blobFrameBytes("results", { idle: message.idle }, message.blob.length),
      );
    } else if (message.t === "event") this.onEvent(message.name, message.data);
  }

  #markLost(reason: PclusterError): void {
    if (this.#lost) return;
    this.#lost = true;
    this.#stopHeartbeat();
    this.onLost(reason);
  }

  #stopHeartbeat(): void {
    clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
  }
}
