import type { Endpoint } from "../protocol/address.ts";
import { dial } from "../protocol/handshake.ts";
import type { Connection } from "../protocol/connection.ts";
import type { LogLine } from "../protocol/messages.ts";
import { printLogLines } from "./format.ts";

/** Lines waiting for the log server, at most; further lines go to stderr. */
const MAX_QUEUED_LINES = 10_000;
/** Characters waiting, at most: with the line bound this caps memory whatever the line sizes. */
const MAX_QUEUED_CHARS = 16 * 1024 * 1024;
/** Characters per `log` message: even as 3-byte UTF-8 far below the server's frame limit. */
const MAX_MESSAGE_CHARS = 4 * 1024 * 1024;
/** Bytes given to the connection but not yet taken by the socket, above which lines wait here. */
const MAX_UNWRITTEN_BYTES = 1024 * 1024;
const FIRST_RETRY_MS = 250;
const MAX_RETRY_MS = 10_000;
/** Connect and handshake bound: a log server that does not answer must not hold lines for long. */
const DIAL_TIMEOUT_MS = 3000;
/**
 * How long lines may wait for a slow server (and keep an otherwise finished process alive):
 * `PCLUSTER_LOG_LINGER_MS`, or 2 s. Lines that went to stderr (the server is down) hold nothing.
 */
const LINGER_MS = lingerMs(process.env.PCLUSTER_LOG_LINGER_MS);

function lingerMs(setting: string | undefined): number {
  if (setting === undefined || setting === "") return 2000;
  const ms = Number(setting);
  if (Number.isInteger(ms) && ms >= 0) return ms;
  process.stderr.write(
    `pcluster: PCLUSTER_LOG_LINGER_MS=${JSON.stringify(setting)} is not a whole number of milliseconds; using 2000\n`,
  );
  return 2000;
}

/** A parsed log server address; `key` names it in messages and in the sender table. */
export type LogEndpoint = Endpoint;

/**
 * The one persistent connection of this thread to one log server. Lines queued in the same tick
 * go out as one `log` message. It connects lazily, and after a failure retries with backoff only
 * once there are new lines; until then, and beyond its bounds, lines go to stderr. It never blocks
 * or throws, and an idle connection never keeps the process alive.
 */
export class LogSender {
  #queue: LogLine[] = [];
  #queuedChars = 0;
  #connection: Connection | undefined;
  #dialing = false;
  #closed = false;
  #retryAt = 0;
  #retryMs = FIRST_RETRY_MS;
  #reportedDown = false;
  #flushScheduled = false;
  #awaitingWrite = false;
  #linger: ReturnType<typeof setTimeout> | undefined;
  #idleWaiters: Array<() => void> = [];

  constructor(
    readonly endpoint: LogEndpoint,
    /** Read at each connect, so a token set after the first line still counts. */
    readonly token: () => string | undefined,
  ) {}

  send(lines: readonly LogLine[]): void {
    const knownDown = this.#connection === undefined && !this.#dialing && Date.now() < this.#retryAt;
    if (this.#closed || knownDown) return printLogLines(process.stderr, lines);
    let taken = 0;
    for (; taken < lines.length; taken++) {
      const line = lines[taken]!;
      if (this.#queue.length >= MAX_QUEUED_LINES || this.#queuedChars + line.msg.length > MAX_QUEUED_CHARS) break;
      this.#queue.push(line);
      this.#queuedChars += line.msg.length;
    }
    if (taken < lines.length) printLogLines(process.stderr, lines.slice(taken));
    if (taken === 0) return;
    // A ref'd timer: the socket itself is unref'd, so this is what lets queued lines out before exit.
    this.#linger ??= setTimeout(this.#onLingerEnd, LINGER_MS);
    this.#scheduleFlush();
  }

  /** Resolves once every queued line was written to the socket or went to stderr. */
  idle(): Promise<void> {
    if (this.#isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Sends what is queued and closes; a dial in flight does the same when it connects. */
  close(): void {
    this.#closed = true;
    const connection = this.#connection;
    if (connection !== undefined) {
      this.#sendQueue(connection);
      connection.close();
    } else if (!this.#dialing) {
      this.#printToStderr();
    }
  }

  /** Lines still waiting after LINGER_MS wait on a server that does not keep up: stderr takes them. */
  readonly #onLingerEnd = (): void => {
    this.#linger = undefined;
    if (this.#dialing) return; // bounded by the dial timeout, which prints them to stderr on failure
    this.#printToStderr();
  };

  /** On the next turn, so all lines logged in this one go as one message. */
  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(this.#flush);
  }

  readonly #flush = (): void => {
    this.#flushScheduled = false;
    if (this.#queue.length === 0) return this.#settle();
    const connection = this.#connection;
    if (connection === undefined || connection.isClosed) return this.#dial();
    // The server is not keeping up: lines wait here (bounded) until #awaitWritten flushes again.
    if (connection.queuedBytes > MAX_UNWRITTEN_BYTES) return;
    this.#sendQueue(connection);
  };

  #sendQueue(connection: Connection): void {
    if (this.#queue.length === 0) return;
    const lines = this.#queue;
    this.#queue = [];
    this.#queuedChars = 0;
    try {
      for (const batch of messageBatches(lines)) connection.send({ t: "log", lines: batch });
    } catch {
      printLogLines(process.stderr, lines); // closed under us; its close handler reconnects later
    }
    this.#awaitWritten(connection);
  }

  /** The connection is made with `maxQueuedBytes: 0`, so `writable()` resolves once all is written. */
  #awaitWritten(connection: Connection): void {
    if (this.#awaitingWrite) return;
    this.#awaitingWrite = true;
    connection.writable().then(() => {
      this.#awaitingWrite = false;
      if (this.#queue.length > 0) this.#scheduleFlush();
      else this.#settle();
    });
  }

  #dial(): void {
    if (this.#dialing) return;
    if (this.#closed || Date.now() < this.#retryAt) return this.#printToStderr();
    this.#dialing = true;
    dial({
      hostname: this.endpoint.host,
      port: this.endpoint.port,
      service: "log",
      token: this.token(),
      connectTimeoutMs: DIAL_TIMEOUT_MS,
      timeoutMs: DIAL_TIMEOUT_MS,
      maxQueuedBytes: 0,
    }).then(
      ({ connection }) => this.#onConnected(connection),
      (error: Error) => this.#onDialFailed(error),
    );
  }

  #onConnected(connection: Connection): void {
    this.#dialing = false;
    this.#retryMs = FIRST_RETRY_MS;
    this.#reportedDown = false;
    connection.unref();
    connection.closed.then((reason) => {
      if (this.#connection === connection) this.#connection = undefined;
      if (reason !== undefined && !this.#closed) this.#reportDown(`the connection failed: ${reason.message}`);
    });
    this.#connection = connection;
    if (this.#closed) this.close();
    else this.#flush();
  }

  #onDialFailed(error: Error): void {
    this.#dialing = false;
    this.#retryAt = Date.now() + this.#retryMs;
    this.#retryMs = Math.min(this.#retryMs * 2, MAX_RETRY_MS);
    this.#reportDown(error.message);
    this.#printToStderr();
  }

  /** Says once per outage why lines are on stderr instead of in the log file. */
  #reportDown(why: string): void {
    if (this.#reportedDown) return;
    this.#reportedDown = true;
    process.stderr.write(
      `pcluster: log server ${this.endpoint.key} unavailable (${why}); log lines go to stderr until it is back\n`,
    );
  }

  #printToStderr(): void {
    printLogLines(process.stderr, this.#queue);
    this.#queue = [];
    this.#queuedChars = 0;
    this.#settle();
  }

  #isIdle(): boolean {
    const unwritten = this.#connection !== undefined && this.#connection.queuedBytes > 0;
    return this.#queue.length === 0 && !this.#dialing && !unwritten;
  }

  #settle(): void {
    if (!this.#isIdle()) return;
    clearTimeout(this.#linger);
    this.#linger = undefined;
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const wake of waiters) wake();
  }
}

/** Splits lines into `log` messages of bounded size (one message in all but extreme cases). */
function* messageBatches(lines: LogLine[]): Generator<LogLine[]> {
  let start = 0;
  let chars = 0;
  for (let i = 0; i < lines.length; i++) {
    const size = lines[i]!.msg.length;
    if (i > start && chars + size > MAX_MESSAGE_CHARS) {
      yield lines.slice(start, i);
      start = i;
      chars = 0;
    }
    chars += size;
  }
  if (start === 0) yield lines;
  else yield lines.slice(start);
}
