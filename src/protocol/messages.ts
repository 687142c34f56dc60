import { ProtocolError } from "../errors.ts";
import { decodeMessage, isNeverUsedByte } from "./codec.ts";

/** Bumped on any incompatible change to frames, messages or records. */
export const PROTOCOL_VERSION = 1;

/** First frame from a server: who it is, and the nonce a client must answer when `auth` is on. */
export interface HelloMessage {
  t: "hello";
  protocol: number;
  service: "node" | "log";
  version: string;
  auth: boolean;
  nonce: Uint8Array;
  /** The largest frame body the server takes after the handshake (larger messages come in parts). */
  maxFrame?: number;
}
/** The client's answer to `hello`: its protocol, its own nonce, and the HMAC of the server's nonce. */
export interface AuthMessage {
  t: "auth";
  protocol: number;
  nonce: Uint8Array;
  mac?: Uint8Array;
  client?: string;
  /** The largest frame body the client takes (larger messages come in parts). */
  maxFrame?: number;
}
/** The server accepts; with auth on it proves it knows the token too (HMAC of the client's nonce). */
export interface WelcomeMessage {
  t: "welcome";
  mac?: Uint8Array;
}
export interface RequestMessage {
  t: "req";
  id: number;
  cmd: string;
  args?: unknown;
}
export interface ResponseMessage {
  t: "res";
  id: number;
  result?: unknown;
}
/** An error answering request `id`, or (without `id`) about the connection or a push. */
export interface ErrorMessage {
  t: "err";
  id?: number;
  code: string;
  message: string;
}
/** Items for the node, as a blob of Input records (see codec.ts). */
export interface FeedMessage {
  t: "feed";
  blob: Uint8Array;
}
/**
 * Records from the node: outputs, completions, task errors; `idle` is its idle worker count now;
 * `standing` is 1 when items waited at the node for room in its workers' queues the whole time since
 * its last results frame (the root keeps more in flight there than the workers need).
 */
export interface ResultsMessage {
  t: "results";
  blob: Uint8Array;
  idle: number;
  standing?: number;
}
/** The root has handled `bytes` more of result bytes: the node may send that much more. */
export interface CreditMessage {
  t: "credit";
  bytes: number;
}
/** A push that is neither items nor results (e.g. the node reset its pipeline). */
export interface EventMessage {
  t: "event";
  name: string;
  data?: unknown;
}
/** The next bytes of a message too large for one frame, and how many are still to come (see parts.ts). */
export interface PartMessage {
  t: "part";
  left: number;
  blob: Uint8Array;
}
/**
 * A part was taken, `left` bytes of its message are still to come: the sender sees the receiver alive
 * while a message of many frames is on its way (its own requests wait behind the parts).
 */
export interface PartAckMessage {
  t: "part-ack";
  left: number;
}
/** How much a log line matters; a line without one is "info" (senders before 0.2 never said). */
export type LogLevel = "info" | "warn" | "error";
export const LOG_LEVELS: readonly LogLevel[] = ["info", "warn", "error"];

export interface LogLine {
  /** Milliseconds since the epoch, when the line was logged. */
  ts: number;
  host: string;
  pid: number;
  msg: string;
  /** Absent (or nil) for "info". */
  level?: LogLevel | null;
  /** The pipeline the line is about (stamped by the node on its tasks' lines). */
  pipeline?: string | null;
  /** The task that was running when a task called `log`. */
  task?: string | null;
}
export interface LogMessage {
  t: "log";
  lines: LogLine[];
}

export type Message =
  | HelloMessage
  | AuthMessage
  | WelcomeMessage
  | RequestMessage
  | ResponseMessage
  | ErrorMessage
  | FeedMessage
  | ResultsMessage
  | CreditMessage
  | EventMessage
  | PartMessage
  | PartAckMessage
  | LogMessage;

// ---- run-time validation -------------------------------------------------------------------------

/** Returns undefined when the value fits, else what was expected. */
export type Check = (value: unknown) => string | undefined;

export const isString: Check = (v) => (typeof v === "string" ? undefined : "a string");
export const isBoolean: Check = (v) => (typeof v === "boolean" ? undefined : "a boolean");
export const isUint: Check = (v) =>
  typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= Number.MAX_SAFE_INTEGER
    ? undefined
    : "a non-negative integer";
export const isBinary: Check = (v) => (v instanceof Uint8Array ? undefined : "binary (bin)");
export const isAny: Check = () => undefined;
/** Absent (or nil), or fitting `check` — down to the fields and items of a `shape` or `arrayOf`. */
export const optional = (check: Check): Check => {
  const wrapped: Check = (v) => (v === undefined || v === null ? undefined : check(v));
  (wrapped as OptionalCheck).inner = check;
  return wrapped;
};
export const oneOf =
  (...values: readonly string[]): Check =>
  (v) =>
    typeof v === "string" && values.includes(v) ? undefined : `one of ${values.map((x) => `"${x}"`).join(", ")}`;

/** A plain object whose listed fields pass their checks (other fields are ignored). */
export function shape(fields: Record<string, Check>): Check {
  const check: Check = (v) => {
    if (typeof v !== "object" || v === null || Array.isArray(v) || v instanceof Uint8Array) return "a map";
    return undefined;
  };
  (check as ShapeCheck).fields = fields;
  return check;
}
export function arrayOf(item: Check, maxLength = 1_000_000): Check {
  const check: Check = (v) =>
    Array.isArray(v) ? (v.length <= maxLength ? undefined : `an array of at most ${maxLength} entries`) : "an array";
  (check as ArrayCheck).item = item;
  return check;
}
interface ShapeCheck extends Check {
  fields?: Record<string, Check>;
}
interface ArrayCheck extends Check {
  item?: Check;
}
interface OptionalCheck extends Check {
  inner?: Check;
}

/**
 * Checks `value` against `check` and throws a `ProtocolError` naming the first field that does not
 * fit, what it should be, and what it was: `setup: field "taskchain[1].export" must be a string, got 7`.
 */
export function validate<T>(value: unknown, check: Check, what: string, path = ""): T {
  const inner = (check as OptionalCheck).inner;
  if (inner !== undefined) {
    return value === undefined || value === null ? (value as T) : validate<T>(value, inner, what, path);
  }
  const expected = check(value);
  if (expected !== undefined) {
    const where = path === "" ? "" : ` field "${path}"`;
    throw new ProtocolError(`${what}:${where} must be ${expected}, got ${describe(value)}`);
  }
  const fields = (check as ShapeCheck).fields;
  if (fields !== undefined) {
    const record = value as Record<string, unknown>;
    for (const key in fields) validate(record[key], fields[key]!, what, path === "" ? key : `${path}.${key}`);
  }
  const item = (check as ArrayCheck).item;
  if (item !== undefined) {
    const list = value as unknown[];
    for (let i = 0; i < list.length; i++) validate(list[i], item, what, `${path}[${i}]`);
  }
  return value as T;
}

function describe(value: unknown): string {
  if (value === undefined) return "nothing";
  if (value === null) return "nil";
  if (value instanceof Uint8Array) return `${value.length} bytes of binary`;
  if (Array.isArray(value)) return `an array of ${value.length}`;
  if (typeof value === "object")
    return Object.getPrototypeOf(value) === Object.prototype ? "a map" : "an unknown value";
  if (typeof value === "string") return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  return String(value);
}

const schemas: Record<Message["t"], Check> = {
  hello: shape({
    protocol: isUint,
    service: oneOf("node", "log"),
    version: isString,
    auth: isBoolean,
    nonce: isBinary,
    maxFrame: optional(isUint),
  }),
  auth: shape({
    protocol: isUint,
    nonce: isBinary,
    mac: optional(isBinary),
    client: optional(isString),
    maxFrame: optional(isUint),
  }),
  welcome: shape({ mac: optional(isBinary) }),
  req: shape({ id: isUint, cmd: isString, args: isAny }),
  res: shape({ id: isUint, result: isAny }),
  err: shape({ id: optional(isUint), code: isString, message: isString }),
  feed: shape({ blob: isBinary }),
  results: shape({ blob: isBinary, idle: isUint, standing: optional(isUint) }),
  credit: shape({ bytes: isUint }),
  event: shape({ name: isString, data: isAny }),
  part: shape({ left: isUint, blob: isBinary }),
  "part-ack": shape({ left: isUint }),
  log: shape({
    lines: arrayOf(
      shape({
        ts: isUint,
        host: isString,
        pid: isUint,
        msg: isString,
        level: optional(oneOf(...LOG_LEVELS)),
        pipeline: optional(isString),
        task: optional(isString),
      }),
      100_000,
    ),
  }),
};

/** Decodes and validates one frame body. Anything that is not a known, well-formed message throws. */
export function parseMessage(body: Uint8Array): Message {
  let value: unknown;
  try {
    value = decodeMessage(body);
    if (isNeverUsedByte(value)) throw new Error("0xc1 is a byte MessagePack never uses");
  } catch (error) {
    throw new ProtocolError(
      `frame body is not valid MessagePack (${(error as Error).message}); is the peer speaking the pcluster protocol?`,
    );
  }
  if (typeof value !== "object" || value === null || Object.getPrototypeOf(value) !== Object.prototype) {
    throw new ProtocolError(`a message must be a map with a "t" field, got ${describe(value)}`);
  }
  const type = (value as { t?: unknown }).t;
  if (typeof type !== "string" || !Object.hasOwn(schemas, type)) {
    throw new ProtocolError(
      `unknown message type ${describe(type)}; expected one of ${Object.keys(schemas).join(", ")}`,
    );
  }
  return validate<Message>(value, schemas[type as Message["t"]], `message "${type}"`);
}
