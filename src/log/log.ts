import { hostname } from "node:os";
import { parseAddress } from "../protocol/address.ts";
import type { LogLevel, LogLine } from "../protocol/messages.ts";
import { printLogLines } from "./format.ts";
import type { LogEndpoint, LogSender } from "./log-sender.ts";

/** Where a log server listens: `["127.0.0.1", 5000]` or `"127.0.0.1:5000"` (`"[::1]:5000"` for IPv6). */
export type LogAddress = readonly [host: string, port: number] | string;

/** Takes lines instead of the network (a node's worker threads forward them to their parent). */
export type LogSink = (lines: LogLine[]) => void;

/** A message is cut beyond this many characters: one huge value must not exhaust memory or a frame. */
const MAX_LINE_CHARS = 1024 * 1024;
/** Lines for the sink are batched per tick, but handed over at once when this many pile up. */
const MAX_SINK_BATCH = 10_000;

/**
 * What this thread's lines are about, stamped on each: a worker sets `task` before it calls a task's
 * code, so a `log` inside a task names it (one item runs at a time per worker, so it is the right one).
 */
export interface LogContext {
  pipeline: string | undefined;
  task: string | undefined;
}

interface LogState {
  context: LogContext;
  defaultEndpoint: LogEndpoint | undefined;
  token: string | undefined;
  sink: LogSink | undefined;
  sinkBatch: LogLine[];
  sinkFlushScheduled: boolean;
  senders: Map<string, LogSender>;
}

/**
 * Per thread, shared by every copy of this module in it: a task package may resolve "pcluster" to
 * another path than the node's, and both copies must use one configuration and one connection.
 */
const state = ((globalThis as Record<symbol, unknown>)[Symbol.for("pcluster.log")] ??= {
  context: { pipeline: undefined, task: undefined },
  defaultEndpoint: undefined,
  token: undefined,
  sink: undefined,
  sinkBatch: [],
  sinkFlushScheduled: false,
  senders: new Map(),
} satisfies LogState) as LogState;
// A copy of this module from before contexts existed may have made the state first.
state.context ??= { pipeline: undefined, task: undefined };

const HOST = hostname();

/** Options of `log` and its levels. */
export interface LogOptions {
  /** A log server for this line only (default: the default address, see `setDefaultLogAddress`). */
  addr?: LogAddress;
}

/** `log(msg)` logs at info; `log.info`, `log.warn` and `log.error` at their level. */
export interface Log {
  (msg: unknown, options?: LogOptions): void;
  info(msg: unknown, options?: LogOptions): void;
  warn(msg: unknown, options?: LogOptions): void;
  error(msg: unknown, options?: LogOptions): void;
}

/**
 * Logs a value to a log server: strings as they are, anything else pretty-printed. Returns at once;
 * the line is batched with the others of this tick over one persistent connection. Without `addr`
 * it goes to the default address (inside a task: the node's log server), or to stdout when there is
 * none. A log server that is down or slow never blocks or throws here: the line goes to stderr.
 * `log()` is `log.info()`; `log.warn()` and `log.error()` mark the line with their level. Inside a
 * task, the line also names the pipeline and the task (see `pcluster log --json`).
 *
 * @example
 * import { log } from "pcluster";
 * log("hello world!", { addr: ["127.0.0.1", 5000] });
 * log({ item: 7, stage: "parse" }); // to the default address
 * log.warn("item 7 has no title; using its id");
 */
export const log: Log = Object.assign((msg: unknown, options?: LogOptions) => logAt("info", msg, options), {
  info: (msg: unknown, options?: LogOptions) => logAt("info", msg, options),
  warn: (msg: unknown, options?: LogOptions) => logAt("warn", msg, options),
  error: (msg: unknown, options?: LogOptions) => logAt("error", msg, options),
});

/**
 * Logs at `level`; `about` names the pipeline or task the line is about when this thread's context
 * does not (a node's own notes on a pipeline). For pcluster's own parts; users call `log`.
 */
export function logAt(level: LogLevel, msg: unknown, options: LogOptions = {}, about?: Partial<LogContext>): void {
  const line: LogLine = { ts: Date.now(), host: HOST, pid: process.pid, msg: formatValue(msg) };
  if (level !== "info") line.level = level; // absent means info: lines stay as small as before
  const pipeline = about?.pipeline ?? state.context.pipeline;
  const task = about?.task ?? state.context.task;
  if (pipeline !== undefined) line.pipeline = pipeline;
  if (task !== undefined) line.task = task;
  if (options.addr !== undefined) return senderFor(parseLogAddress(options.addr)).send([line]);
  if (state.sink !== undefined) return queueForSink(line);
  deliver([line], state.defaultEndpoint);
}

/** This thread's log context, to change in place (the worker sets `task` as it runs tasks). */
export function logContext(): LogContext {
  return state.context;
}

/**
 * Sets where `log()` sends lines without an `addr` (`undefined`: to stdout). Throws a `TypeError`
 * for a malformed address.
 *
 * @example
 * import { log, setDefaultLogAddress } from "pcluster";
 * setDefaultLogAddress(["127.0.0.1", 5000]); // or "127.0.0.1:5000"
 * log("goes to 127.0.0.1:5000");
 */
export function setDefaultLogAddress(addr: LogAddress | undefined): void {
  state.defaultEndpoint = addr === undefined ? undefined : parseLogAddress(addr);
}

export function getDefaultLogAddress(): readonly [host: string, port: number] | undefined {
  const endpoint = state.defaultEndpoint;
  return endpoint === undefined ? undefined : [endpoint.host, endpoint.port];
}

/** The token for log servers started with `--token` (default: `$PCLUSTER_TOKEN`); used from the next connect on. */
export function setLogToken(token: string | undefined): void {
  state.token = token || undefined;
}

/** Sends lines to `sink` instead of a log server (`undefined`: back to the network). */
export function setLogSink(sink: LogSink | undefined): void {
  state.sink = sink;
}

/** Sends lines logged elsewhere (e.g. by a worker thread) unchanged, through this thread's connection. */
export function sendLogLines(lines: LogLine[], addr?: LogAddress): void {
  deliver(lines, addr === undefined ? state.defaultEndpoint : parseLogAddress(addr));
}

/** Resolves when every queued line is written to its socket (or stderr), or after `timeoutMs`. */
export async function flushLogs(timeoutMs = 2000): Promise<void> {
  flushSink();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)));
  const idle = Promise.all([...state.senders.values()].map((sender) => sender.idle()));
  await Promise.race([idle, timeout]);
  clearTimeout(timer);
}

/** Hands the lines waiting for the sink over now instead of on the next turn (cheap when none wait). */
export function flushLogSink(): void {
  if (state.sinkBatch.length > 0) flushSink();
}

/** Sends what is queued and closes every log connection of this thread. Later lines connect again. */
export function closeLogs(): void {
  flushSink();
  for (const sender of state.senders.values()) sender.close();
  state.senders.clear();
}

/** Parses a `LogAddress`; throws a `TypeError` saying what is expected. */
function parseLogAddress(addr: LogAddress): LogEndpoint {
  return parseAddress(addr, "log address");
}

function senderFor(endpoint: LogEndpoint): LogSender {
  let sender = state.senders.get(endpoint.key);
  if (sender === undefined) {
    // Loaded on first use: it brings the whole connection layer, which a worker thread (whose lines
    // go to its sink) never needs, and which would cost each worker's start-up tens of ms of CPU.
    const { LogSender } = require("./log-sender.ts") as typeof import("./log-sender.ts");
    sender = new LogSender(endpoint, () => state.token ?? process.env.PCLUSTER_TOKEN);
    state.senders.set(endpoint.key, sender);
  }
  return sender;
}

function deliver(lines: LogLine[], endpoint: LogEndpoint | undefined): void {
  if (endpoint === undefined) printLogLines(process.stdout, lines);
  else senderFor(endpoint).send(lines);
}

function queueForSink(line: LogLine): void {
  state.sinkBatch.push(line);
  if (state.sinkBatch.length >= MAX_SINK_BATCH) return flushSink();
  if (!state.sinkFlushScheduled) {
    state.sinkFlushScheduled = true;
    setImmediate(flushSink);
  }
}

function flushSink(): void {
  state.sinkFlushScheduled = false;
  const lines = state.sinkBatch;
  if (lines.length === 0) return;
  state.sinkBatch = [];
  const sink = state.sink;
  if (sink === undefined) return deliver(lines, state.defaultEndpoint); // unset since they were queued
  try {
    sink(lines);
  } catch {
    printLogLines(process.stderr, lines);
  }
}

/** Strings as they are, anything else as Bun prints it (objects over several indented lines). */
function formatValue(value: unknown): string {
  let text: string;
  try {
    text = typeof value === "string" ? value : Bun.inspect(value);
  } catch {
    text = "[a value that cannot be printed]"; // e.g. a Proxy whose traps throw
  }
  if (text.length <= MAX_LINE_CHARS) return text;
  return `${text.slice(0, MAX_LINE_CHARS)}… (${text.length - MAX_LINE_CHARS} more characters)`;
}
