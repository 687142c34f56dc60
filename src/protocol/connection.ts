import type { Socket, SocketHandler, TCPSocketListener, TLSOptions } from "bun";
// Diagnostics (warnings, failures nobody can catch) print through consola, in every part of pcluster;
// stdout is left to a command's own output, and task lines go through `log()`.
import { diagnostics } from "../diagnostics.ts";
import {
  ConnectionClosedError,
  PclusterError,
  ProtocolError,
  TimeoutError,
  errorFromWire,
  errorToWire,
} from "../errors.ts";
import { encode } from "./codec.ts";
import { type BodyMemory, DEFAULT_MAX_FRAME_BYTES, FRAME_HEADER_BYTES, FrameDecoder, frameOf } from "./frame.ts";
import { type ErrorMessage, type Message, parseMessage } from "./messages.ts";
import { PART_FROM_BYTES, PartJoiner, partFrames } from "./parts.ts";
import type { ClientTls } from "./tls.ts";

export interface ConnectionOptions {
  /** Largest frame body accepted from the peer (default 64 MiB). */
  maxFrameBytes?: number;
  /**
   * Largest frame body accepted until `trust()` (default: `maxFrameBytes`). A server sets it so that a
   * peer that has not passed the handshake cannot make it hold more than a few KiB (see `serve`).
   */
  maxHandshakeFrameBytes?: number;
  /** Bytes queued for the socket above which `writable()` makes senders wait (default 8 MiB). */
  maxQueuedBytes?: number;
  /** Default time a request waits for its answer (default 30 s). */
  requestTimeoutMs?: number;
  /**
   * A buffer of `size` bytes to join a message sent in parts in (its bytes need not be zeroed); default:
   * ordinary memory. A node joins in shared memory, so that its workers read a large item where it lies.
   */
  joinParts?: (size: number) => Uint8Array;
  /**
   * Memory that frames spanning chunks are assembled in (see FrameDecoder): given, each message's
   * receiver releases its bytes there once done with them; default: ordinary memory, one body's kept.
   */
  frameMemory?: BodyMemory;
}

/** Answers a request; what it returns (or throws, as a typed error) goes back to the requester. */
export type RequestHandler = (cmd: string, args: unknown, connection: Connection) => unknown;

/** Frames smaller than this are copied together into one socket write; larger ones are written as they are. */
const COALESCE_BELOW = 64 * 1024;
const SCRATCH_BYTES = 256 * 1024;
/** Frames from this size on are written at once by `sendFrameCopy` when nothing is queued before them. */
const WRITE_NOW_FROM = 16 * 1024;
const EMPTY = new Uint8Array(0);

/**
 * A framed, message-level connection over one Bun socket, the same for roots, nodes and log servers.
 *
 * Writes are queued and flushed once per microtask turn, so many small frames cost one syscall. Bun's
 * `socket.write` may take only part of the bytes: the rest stays queued, in order, until `drain`.
 * Senders that produce faster than the peer reads await `writable()`, which holds them while more than
 * `maxQueuedBytes` are queued. Nothing is dropped or reordered.
 */
export class Connection {
  /** Called with every message that is not an answer to one of our requests and not a request. */
  onMessage: (message: Message, connection: Connection) => void = () => {};
  /** Answers the peer's requests; without one, requests go to `onMessage` like any message. */
  onRequest: RequestHandler | undefined;
  /** Resolves once the connection is closed, with the reason when it was not a clean close. */
  readonly closed: Promise<PclusterError | undefined>;
  /** The peer's address as the socket reports it. */
  readonly remoteAddress: string;

  readonly #socket: Socket<unknown>;
  readonly #decoder: FrameDecoder;
  /** The frame limit this side announces in the handshake (whatever the decoder allows before it). */
  readonly #maxFrameBytes: number;
  readonly #parts: PartJoiner;
  /** The largest frame body the peer takes: larger messages go to it in parts (the handshake tells it). */
  #peerMaxFrameBytes = DEFAULT_MAX_FRAME_BYTES;
  readonly #maxQueuedBytes: number;
  readonly #requestTimeoutMs: number;
  #queue: Uint8Array[] = [];
  #queueHead = 0;
  #queuedBytes = 0;
  #receivedBytes = 0;
  #writtenBytes = 0;
  #scratch: Uint8Array | undefined;
  #flushScheduled = false;
  /** The handler of the message being dispatched kept none of its bytes (see `releaseMessage`). */
  #messageReleased = false;
  #awaitingDrain = false;
  #endAfterFlush = false;
  #isClosed = false;
  #closeReason: PclusterError | undefined;
  #resolveClosed!: (reason: PclusterError | undefined) => void;
  #writableWaiters: Array<{ queuedBytes: number; wake: () => void }> = [];
  #nextRequestId = 1;
  readonly #pending = new Map<number, PendingRequest>();

  constructor(socket: Socket<unknown>, options: ConnectionOptions = {}) {
    this.#socket = socket;
    this.#maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    this.#decoder = new FrameDecoder(this.#maxFrameBytes, options.maxHandshakeFrameBytes, options.frameMemory);
    // No message larger than a frame before the handshake (than a handshake frame, where that limit is
    // set) until the handshake trusts the peer (see `trust`, and `maxMessageBytes` of serve and dial).
    this.#parts = new PartJoiner(options.maxHandshakeFrameBytes ?? this.#maxFrameBytes, options.joinParts);
    this.#maxQueuedBytes = options.maxQueuedBytes ?? 8 * 1024 * 1024;
    this.#requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
    this.remoteAddress = socket.remoteAddress;
    this.closed = new Promise((resolve) => (this.#resolveClosed = resolve));
  }

  get isClosed(): boolean {
    return this.#isClosed;
  }

  /** The largest frame body this side takes from the peer once past the handshake. */
  get maxFrameBytes(): number {
    return this.#maxFrameBytes;
  }

  /** The largest message this side takes from the peer in parts. */
  get maxMessageBytes(): number {
    return this.#parts.maxMessageBytes;
  }

  set maxMessageBytes(bytes: number) {
    this.#parts.maxMessageBytes = bytes;
  }

  /** The largest frame body the peer takes; a message larger than that is sent in parts. */
  get peerMaxFrameBytes(): number {
    return this.#peerMaxFrameBytes;
  }

  set peerMaxFrameBytes(bytes: number) {
    this.#peerMaxFrameBytes = bytes;
  }

  /**
   * Bytes received and bytes the socket took, since the start: they move while a message of many
   * parts is on its way, before it is a message anyone sees (a heartbeat counts that as life).
   */
  get receivedBytes(): number {
    return this.#receivedBytes;
  }

  get writtenBytes(): number {
    return this.#writtenBytes;
  }

  /** Bytes waiting to be written to the socket. */
  get queuedBytes(): number {
    return this.#queuedBytes;
  }

  /** Encodes and queues a message. Throws `ConnectionClosedError` once closed. */
  send(message: Message): void {
    this.sendFrame(frameOf(encode(message)));
  }

  /**
   * Queues a whole, already encoded frame (header included). The bytes must not change afterwards. A
   * large frame, or one larger than the peer takes, goes in parts, queued back to back (nothing can come
   * between them; see parts.ts).
   */
  sendFrame(frame: Uint8Array): void {
    this.#assertOpen();
    if (this.#inParts(frame.length)) this.#enqueueParts([frame]);
    else this.#enqueue(frame);
  }

  /**
   * Sends a whole frame whose bytes the caller may change as soon as this returns. A large one is written
   * to the socket at once when nothing waits before it (what the socket does not take is copied into the
   * queue): a sender that builds its frames in memory it keeps needs no buffer per frame, which cost a
   * node's socket thread a fifth of its CPU on outputs of 10 KB (fresh memory, zeroed and faulted in).
   * A small one, or one behind others, is copied into the queue, to be written with the rest.
   */
  sendFrameCopy(frame: Uint8Array): void {
    this.#assertOpen();
    if (frame.length < WRITE_NOW_FROM || this.#queuedBytes > 0 || this.#awaitingDrain || this.#inParts(frame.length)) {
      return this.sendFrame(frame.slice());
    }
    const written = this.#socket.write(frame);
    if (written < 0) return; // the socket is closing; handleClose follows
    this.#writtenBytes += written;
    if (written < frame.length) {
      this.#awaitingDrain = true;
      this.#queue.push(frame.slice(written));
      this.#queuedBytes += frame.length - written;
    }
  }

  /**
   * Queues one frame given as pieces, back to back (the first starts with the frame header). Their bytes
   * must not change until written. A large one, or one larger than the peer takes, goes in parts.
   */
  sendFramePieces(pieces: readonly Uint8Array[]): void {
    if (pieces.length === 1) return this.sendFrame(pieces[0]!);
    this.#assertOpen();
    let length = 0;
    for (const piece of pieces) length += piece.length;
    if (this.#inParts(length)) this.#enqueueParts(pieces);
    else for (const piece of pieces) this.#enqueue(piece);
  }

  #inParts(frameLength: number): boolean {
    const bodyLength = frameLength - FRAME_HEADER_BYTES;
    return bodyLength > PART_FROM_BYTES || bodyLength > this.#peerMaxFrameBytes;
  }

  #enqueueParts(frame: readonly Uint8Array[]): void {
    for (const piece of partFrames(frame, this.#peerMaxFrameBytes)) this.#enqueue(piece);
  }

  #assertOpen(): void {
    if (this.#isClosed || this.#endAfterFlush) {
      throw new ConnectionClosedError(`connection to ${this.remoteAddress} is closed`, { cause: this.#closeReason });
    }
  }

  #enqueue(frame: Uint8Array): void {
    this.#queue.push(frame);
    this.#queuedBytes += frame.length;
    if (!this.#flushScheduled && !this.#awaitingDrain) {
      this.#flushScheduled = true;
      queueMicrotask(this.#flush);
    }
  }

  /**
   * Resolves when at most `queuedBytes` wait to be written (default: the connection's bound) — at once if
   * no more do already, or if it is closed. A caller that waits for less than the bound must say so here:
   * resolved at the bound, it would find the queue still too long and ask again at once, a loop of
   * microtasks in which the socket never gets to write.
   */
  writable(queuedBytes = this.#maxQueuedBytes): Promise<void> {
    if (this.#queuedBytes <= queuedBytes || this.#isClosed) return Promise.resolve();
    return new Promise((wake) => this.#writableWaiters.push({ queuedBytes, wake }));
  }

  /** Sends a request and resolves with the peer's answer; rejects with its typed error or a timeout. */
  request<T = unknown>(cmd: string, args?: unknown, timeoutMs = this.#requestTimeoutMs): Promise<T> {
    if (this.#isClosed) {
      return Promise.reject(
        new ConnectionClosedError(`cannot send "${cmd}": connection to ${this.remoteAddress} is closed`, {
          cause: this.#closeReason,
        }),
      );
    }
    const id = this.#nextRequestId++;
    return new Promise<T>((resolve, reject) => {
      const timer =
        timeoutMs > 0 && Number.isFinite(timeoutMs)
          ? setTimeout(() => {
              this.#pending.delete(id);
              reject(new TimeoutError(`"${cmd}" got no answer from ${this.remoteAddress} within ${timeoutMs} ms`));
            }, timeoutMs)
          : undefined;
      this.#pending.set(id, { cmd, resolve: resolve as (value: unknown) => void, reject, timer });
      this.send({ t: "req", id, cmd, args });
    });
  }

  /** The peer passed the handshake: frames up to `maxFrameBytes` are accepted from now on. */
  trust(): void {
    this.#decoder.trust();
    if (this.#parts.maxMessageBytes < this.#maxFrameBytes) this.#parts.maxMessageBytes = this.#maxFrameBytes;
  }

  /** Stops reading from the socket (the peer's writes then back up in TCP). */
  pause(): void {
    if (!this.#isClosed) this.#socket.pause();
  }

  resume(): void {
    if (!this.#isClosed) this.#socket.resume();
  }

  /** Lets the process exit while this connection is still open (an idle log connection must not hold it). */
  unref(): void {
    if (!this.#isClosed) this.#socket.unref();
  }

  /** Keeps the process alive while this connection is open (the default). */
  ref(): void {
    if (!this.#isClosed) this.#socket.ref();
  }

  /** Flushes what is queued, then closes. */
  close(): void {
    if (this.#isClosed) return;
    if (this.#queuedBytes === 0) this.#socket.end();
    else this.#endAfterFlush = true;
  }

  /** Sends an error about the connection itself (if still possible), then closes. */
  fail(error: unknown): void {
    if (this.#isClosed) return;
    const wire = errorToWire(error);
    try {
      this.send({ t: "err", code: wire.code, message: wire.message });
    } catch {
      // already closing
    }
    this.#closeReason ??= error instanceof PclusterError ? error : undefined;
    this.close();
  }

  /** Closes at once, dropping anything queued. */
  destroy(reason?: PclusterError): void {
    if (this.#isClosed) return;
    this.#closeReason ??= reason;
    this.#socket.terminate();
    this.handleClose();
  }

  // ---- called by the socket handlers ------------------------------------------------------------

  /** @internal */
  handleData(chunk: Uint8Array): void {
    if (this.#isClosed) return;
    this.#receivedBytes += chunk.length;
    try {
      this.#decoder.push(chunk, this.#onFrame);
    } catch (error) {
      // A protocol error is the peer's fault and is told to it; anything else is a bug in a handler,
      // which must not take the process down: the connection fails with it, and its owner sees why.
      if (!(error instanceof ProtocolError)) diagnostics().error("pcluster: connection handler failed:", error);
      this.fail(error);
    }
  }

  /** @internal */
  handleDrain(): void {
    this.#awaitingDrain = false;
    this.#flush();
  }

  /** @internal */
  handleClose(error?: Error): void {
    if (this.#isClosed) return;
    this.#isClosed = true;
    if (error !== undefined && this.#closeReason === undefined) {
      this.#closeReason = new ConnectionClosedError(`connection to ${this.remoteAddress} failed: ${error.message}`, {
        cause: error,
      });
    }
    const reason = this.#closeReason;
    for (const [id, pending] of this.#pending) {
      clearTimeout(pending.timer);
      pending.reject(
        reason ??
          new ConnectionClosedError(`connection to ${this.remoteAddress} closed before "${pending.cmd}" was answered`),
      );
      this.#pending.delete(id);
    }
    this.#queue = [];
    this.#queueHead = 0;
    this.#queuedBytes = 0;
    this.#releaseWriters();
    this.#resolveClosed(reason);
  }

  /**
   * A frame's message, to its handler; true when the handler said it kept none of the frame's bytes
   * (`releaseMessage`), so that the decoder may assemble the next frame in the same memory.
   */
  readonly #onFrame = (body: Uint8Array): boolean => {
    this.#messageReleased = false;
    this.#dispatch(parseMessage(body));
    return this.#messageReleased;
  };

  /**
   * Called by a message's handler, during the call, when it kept no view of the message's bytes (say,
   * a feed copied into the workers' rings): its frame's memory may take the next frame.
   */
  releaseMessage(): void {
    this.#messageReleased = true;
  }

  #dispatch(message: Message): void {
    if (this.#parts.joining && message.t !== "part") {
      throw new ProtocolError(`a "${message.t}" message came between the parts of a message`);
    }
    switch (message.t) {
      case "part": {
        const body = this.#parts.add(message.blob, message.left);
        // The part's bytes were copied: its frame's memory may take the next frame.
        if (body !== message.blob) this.#messageReleased = true;
        if (body === undefined) return this.send({ t: "part-ack", left: message.left });
        const whole = parseMessage(body);
        if (whole.t === "part") throw new ProtocolError("a message sent in parts was itself a part");
        return this.#dispatch(whole);
      }
      case "part-ack":
        return; // its bytes were counted (`receivedBytes`): that is all it is for
      case "res":
        return this.#settle(message);
      case "err":
        if (message.id !== undefined) return this.#settle(message);
        this.#closeReason ??= errorFromWire(message.code, message.message);
        return this.onMessage(message, this);
      case "req":
        // Before its owner takes requests (during the handshake) a request is just a message.
        if (this.onRequest === undefined) return this.onMessage(message, this);
        return this.#answer(message.id, message.cmd, message.args);
      default:
        return this.onMessage(message, this);
    }
  }

  #settle(message: { t: "res"; id: number; result?: unknown } | ErrorMessage): void {
    const pending = this.#pending.get(message.id!);
    if (pending === undefined) return; // answered after its timeout
    this.#pending.delete(message.id!);
    clearTimeout(pending.timer);
    if (message.t === "res") pending.resolve(message.result);
    else pending.reject(errorFromWire(message.code, message.message));
  }

  #answer(id: number, cmd: string, args: unknown): void {
    const handler = this.onRequest!;
    const reply = (result: unknown) => {
      if (!this.#isClosed) this.send({ t: "res", id, result });
    };
    const refuse = (error: unknown) => {
      if (this.#isClosed) return;
      const wire = errorToWire(error);
      this.send({ t: "err", id, code: wire.code, message: wire.message });
    };
    try {
      const result = handler(cmd, args, this);
      if (result instanceof Promise) result.then(reply, refuse);
      else reply(result);
    } catch (error) {
      refuse(error);
    }
  }

  readonly #flush = (): void => {
    this.#flushScheduled = false;
    if (this.#isClosed || this.#awaitingDrain) return;
    const queue = this.#queue;
    while (this.#queueHead < queue.length) {
      let chunk = queue[this.#queueHead]!;
      let coalesced = false;
      if (chunk.length < COALESCE_BELOW && this.#queueHead + 1 < queue.length) {
        const scratch = (this.#scratch ??= new Uint8Array(SCRATCH_BYTES));
        let size = 0;
        while (this.#queueHead < queue.length && size + queue[this.#queueHead]!.length <= SCRATCH_BYTES) {
          const piece = queue[this.#queueHead]!;
          queue[this.#queueHead++] = EMPTY; // written frames must not stay reachable
          scratch.set(piece, size);
          size += piece.length;
        }
        chunk = scratch.subarray(0, size);
        coalesced = true;
      } else {
        queue[this.#queueHead++] = EMPTY;
      }
      const written = this.#socket.write(chunk);
      if (written < 0) return; // the socket is closing; handleClose follows
      this.#queuedBytes -= written;
      this.#writtenBytes += written;
      if (written < chunk.length) {
        // Keep the rest in front of the queue; scratch bytes must be copied since scratch is reused.
        const rest = coalesced ? chunk.slice(written) : chunk.subarray(written);
        queue[--this.#queueHead] = rest;
        this.#awaitingDrain = true;
        this.#compactQueue();
        this.#releaseWriters();
        return;
      }
    }
    this.#queue = [];
    this.#queueHead = 0;
    this.#releaseWriters();
    if (this.#endAfterFlush) this.#socket.end();
  };

  #compactQueue(): void {
    if (this.#queueHead > 64 && this.#queueHead * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#queueHead);
      this.#queueHead = 0;
    }
  }

  #releaseWriters(): void {
    const waiters = this.#writableWaiters;
    if (waiters.length === 0) return;
    let kept = 0;
    for (const waiter of waiters) {
      if (this.#queuedBytes <= waiter.queuedBytes || this.#isClosed) waiter.wake();
      else waiters[kept++] = waiter;
    }
    waiters.length = kept;
  }
}

interface PendingRequest {
  cmd: string;
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  timer: ReturnType<typeof setTimeout> | undefined;
}

// ---- sockets ---------------------------------------------------------------------------------------

/** TLS for a server: PEM certificate and key (contents or `Bun.file`s). */
export type ServerTls = TLSOptions;
export type { ClientTls };

function handlersFor(
  options: ConnectionOptions,
  onOpen: (connection: Connection) => void,
): SocketHandler<{ connection?: Connection }> {
  return {
    open(socket) {
      const connection = new Connection(socket as Socket<unknown>, options);
      socket.data = { connection };
      onOpen(connection);
    },
    data(socket, chunk) {
      socket.data.connection?.handleData(chunk);
    },
    drain(socket) {
      socket.data.connection?.handleDrain();
    },
    close(socket, error) {
      socket.data.connection?.handleClose(error);
    },
    end(socket) {
      socket.end();
    },
    error(socket, error) {
      socket.data.connection?.handleClose(error);
    },
  };
}

export interface ListenOptions extends ConnectionOptions {
  hostname: string;
  port: number;
  tls?: ServerTls;
}

/** Listens for framed connections; `onConnection` gets each one as soon as its socket opens. */
export function listen(
  options: ListenOptions,
  onConnection: (connection: Connection) => void,
): TCPSocketListener<{ connection?: Connection }> {
  return Bun.listen<{ connection?: Connection }>({
    hostname: options.hostname,
    port: options.port,
    ...(options.tls ? { tls: options.tls } : {}),
    socket: handlersFor(options, onConnection),
    data: {},
  });
}

export interface ConnectOptions extends ConnectionOptions {
  hostname: string;
  port: number;
  tls?: ClientTls;
  /** Give up connecting after this long (default 5 s). */
  connectTimeoutMs?: number;
  /** Called for the connection as soon as its socket opens, before any byte is read. */
  onOpen?: (connection: Connection) => void;
}

/** Whether a client with these TLS options refuses a certificate it cannot verify (the default). */
function verifies(tls: ClientTls | undefined): boolean {
  return tls !== undefined && tls !== false && !(typeof tls === "object" && tls.rejectUnauthorized === false);
}

/** Opens a framed connection. Rejects with a `ConnectionClosedError` naming the address on failure. */
export function connect(options: ConnectOptions): Promise<Connection> {
  const address = `${options.hostname}:${options.port}`;
  const timeoutMs = options.connectTimeoutMs ?? 5000;
  return new Promise<Connection>((resolve, reject) => {
    let opened: Connection | undefined;
    let settled = false;
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      opened?.destroy();
      reject(new TimeoutError(`could not connect to ${address} within ${timeoutMs} ms`));
    }, timeoutMs);
    // Settle on `open`, not on Bun.connect's promise: with TLS the promise can resolve before the
    // socket's open handler has run, and the connection would not exist yet.
    const handlers = handlersFor(options, (connection) => {
      opened = connection;
      options.onOpen?.(connection);
      if (settled) return connection.destroy();
      settled = true;
      clearTimeout(timer);
      resolve(connection);
    });
    Bun.connect<{ connection?: Connection }>({
      hostname: options.hostname,
      port: options.port,
      ...(options.tls ? { tls: options.tls } : {}),
      socket: {
        ...handlers,
        handshake(socket, success, authorizationError) {
          // Bun closes a connection whose certificate it refused, and says why only here.
          if (success || authorizationError === null || !verifies(options.tls)) return;
          socket.data.connection?.handleClose(
            new Error(`TLS: the certificate of ${address} is not trusted here: ${authorizationError.message}`),
          );
        },
        connectError(_socket, error) {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          reject(new ConnectionClosedError(`could not connect to ${address}: ${error.message}`, { cause: error }));
        },
      },
      data: {},
    }).then(
      (socket) => {
        // A socket that opens after the timeout gave up is closed at once.
        if (settled && opened === undefined) socket.end();
      },
      (error: Error) => {
        clearTimeout(timer);
        if (settled) return;
        settled = true;
        reject(new ConnectionClosedError(`could not connect to ${address}: ${error.message}`, { cause: error }));
      },
    );
  });
}
