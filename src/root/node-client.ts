import { ConnectionClosedError, type PclusterError, TimeoutError } from "../errors.ts";
import type { Endpoint } from "../protocol/address.ts";
import { dial } from "../protocol/handshake.ts";
import type { Connection } from "../protocol/connection.ts";
import { type BodyMemory, blobFrameBytes } from "../protocol/frame.ts";
import { DEFAULT_MAX_ITEM_BYTES, DEFAULT_RESULT_WINDOW_BYTES, messageLimitFor } from "../protocol/limits.ts";
import type { Message } from "../protocol/messages.ts";
import type { NodeStatus, SetupArgs } from "../protocol/pipeline.ts";
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
  "token" | "tls" | "connectTimeoutMs" | "heartbeatMs" | "heartbeatTimeoutMs" | "maxItemBytes"
>;

/**
 * `NodeClient`: the root's one persistent connection to one node — its commands, its pushes, and a
 * heartbeat that notices a node which stopped answering without closing its socket.
 */
export class NodeClient implements FeedTarget {
  /** Results from the node: records, its idle worker count, the frame's size (for credit). */
  onResults: (blob: Uint8Array, idle: number, standing: boolean, frameBytes: number) => void = () => {};
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
  /** Whether the connection keeps the process alive (a new one does). */
  #keptAlive = true;
  /** Result credit handled here and not given back yet (see `credit`). */
  #owedCredit = 0;
  /** Owed credit goes back on its own once it reaches this: a quarter of the pipeline's result window. */
  #creditStep = DEFAULT_RESULT_WINDOW_BYTES / 4;

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

  /**
   * Connects and runs the handshake. `memory`: where results frames that span chunks are assembled and
   * results messages sent in parts are joined; their receiver releases them there once handled.
   */
  static async connect(endpoint: Endpoint, options: NodeClientOptions = {}, memory?: BodyMemory): Promise<NodeClient> {
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
      maxMessageBytes: messageLimitFor(options.maxItemBytes ?? DEFAULT_MAX_ITEM_BYTES),
      joinParts: memory === undefined ? undefined : (size) => memory.take(size),
      frameMemory: memory,
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
    if (cmd === "setup" || cmd === "reset") {
      // The node's credit starts afresh at the pipeline's result window: what the last one owed is void.
      this.#owedCredit = 0;
      const window = cmd === "setup" ? (args as SetupArgs).resultWindow : undefined;
      this.#creditStep = (window ?? DEFAULT_RESULT_WINDOW_BYTES) / 4;
    }
    return this.#connection.request<T>(cmd, args, timeoutMs).then((answer) => {
      this.#lastAnswer = performance.now();
      return answer;
    });
  }

  /** Takes result messages that hold outputs of up to `maxItemBytes` (a pipeline's own limit). */
  allowItems(maxItemBytes: number): void {
    this.#connection.maxMessageBytes = messageLimitFor(maxItemBytes);
  }

  /** Sends a feed frame, and the credit owed, which rides along in the same write. */
  sendFeed(pieces: readonly Uint8Array[]): void {
    this.#payCredit();
    this.#connection.sendFramePieces(pieces);
  }

  /**
   * Gives the node `bytes` more result credit: with the next feed frame, or once a quarter of the result
   * window is owed. A message per results frame would wake the node's socket thread (and cost this
   * process a write) per frame, and frames of slow items hold a few items each. Held back like this,
   * the node never stalls for it: it runs short only with three quarters of its window sent and not
   * handled here, and handling those makes the credit owed reach the quarter.
   */
  credit(bytes: number): void {
    if (bytes <= 0) return;
    this.#owedCredit += bytes;
    if (this.#owedCredit >= this.#creditStep) this.#payCredit();
  }

  #payCredit(): void {
    if (this.#owedCredit === 0 || !this.isOpen) return;
    this.#connection.send({ t: "credit", bytes: this.#owedCredit });
    this.#owedCredit = 0;
  }

  /** Lets the process exit while nothing is pending on this connection (and keeps it alive otherwise). */
  keepAlive(active: boolean): void {
    if (active === this.#keptAlive) return; // asked after every pump: a call into the socket only on a change
    this.#keptAlive = active;
    if (active) this.#connection.ref();
    else this.#connection.unref();
  }

  /** Pings the node; a node that answers nothing (not even results) for the timeout is lost. */
  startHeartbeat(): void {
    if (this.#heartbeat !== undefined) return;
    const every = this.#options.heartbeatMs ?? 2000;
    const timeout = this.#options.heartbeatTimeoutMs ?? 15_000;
    let lastTick = performance.now();
    const connection = this.#connection;
    let received = connection.receivedBytes;
    let written = connection.writtenBytes;
    let backlog = false;
    this.#heartbeat = setInterval(() => {
      if (!this.isOpen) return this.#stopHeartbeat();
      const now = performance.now();
      // A large item going out or a large output coming in is many frames before it is one message:
      // bytes received, or a backlog the node keeps reading (not our pings alone), are life too.
      if (connection.receivedBytes !== received || (backlog && connection.writtenBytes !== written)) {
        this.#lastAnswer = Math.max(this.#lastAnswer, lastTick);
      }
      received = connection.receivedBytes;
      written = connection.writtenBytes;
      backlog = connection.queuedBytes > 0;
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
      const { blob, idle, standing } = message;
      this.onResults(blob, idle, standing === 1, resultsHeadBytes(idle, standing) + blob.length);
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

/** Head bytes of a results frame by its fields (the same few over and over: worked out once each). */
const resultsHeads: number[] = [];

function resultsHeadBytes(idle: number, standing: number | undefined): number {
  const fields: Record<string, number> = standing === undefined ? { idle } : { idle, standing };
  if (idle >= 1024 || (standing !== undefined && standing > 1)) return blobFrameBytes("results", fields, 0);
  return (resultsHeads[idle * 3 + (standing ?? 2)] ??= blobFrameBytes("results", fields, 0));
}
