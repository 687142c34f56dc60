/**
 * Typed errors. Every error pcluster raises is a `PclusterError` with a stable `code`, so that an error
 * answered over the wire is rebuilt on the other side as the same class (see `errorFromWire`).
 *
 * @example
 * try { await cluster.setup("p", "1", chain) } catch (e) { if (e instanceof NodeBusyError) … }
 */
export class PclusterError extends Error {
  /** Stable machine-readable code; travels over the wire with the message. */
  readonly code: string = "internal";
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The peer sent bytes or a message that break the protocol (garbage, oversize frame, bad field). */
export class ProtocolError extends PclusterError {
  override readonly code: string = "protocol";
}

/** The peers speak different protocol versions. */
export class VersionMismatchError extends ProtocolError {
  override readonly code = "version";
}

/** A token was missing, wrong, or the peer could not prove it knows it. */
export class AuthError extends PclusterError {
  override readonly code = "auth";
}

/** The node already runs another root's pipeline. */
export class NodeBusyError extends PclusterError {
  override readonly code = "busy";
}

/** A taskchain or package could not be set up (missing export, install failure, unsafe path…). */
export class SetupError extends PclusterError {
  override readonly code = "setup";
}

/** A request got no answer in time, or a peer fell silent. */
export class TimeoutError extends PclusterError {
  override readonly code = "timeout";
}

/** The connection closed (or was never open) while something still depended on it. */
export class ConnectionClosedError extends PclusterError {
  override readonly code = "closed";
}

/** A server could not listen: the address is in use, or not one of this machine's. */
export class ListenError extends PclusterError {
  override readonly code = "listen";
}

/** A host name did not resolve to any address (e.g. `searchNodes({ dns })` with a wrong name). */
export class NameLookupError extends PclusterError {
  override readonly code = "lookup";
}

/** A server refused a connection: it has as many open (or waiting for the handshake) as it allows. */
export class ConnectionLimitError extends PclusterError {
  override readonly code = "connection-limit";
}

/** The root has no node left to run items on. */
export class NoNodesError extends PclusterError {
  override readonly code = "no-nodes";
}

/** `feed` was called on a full, bounded root queue (use `feedAsync` to wait for room). */
export class QueueFullError extends PclusterError {
  override readonly code = "queue-full";
}

/** The receiver was asked to do something its state does not allow (feed before setup, …). */
export class StateError extends PclusterError {
  override readonly code = "state";
}

/**
 * An item (at `feed`, `feedMany`, `run`, `process`) or a task's output holds a value pcluster cannot
 * carry as itself: a function, a symbol, a circular reference, a Map, a class instance… (the README's
 * "What an item may be"). The message names where: `items[3].meta.cb: a function cannot be sent`.
 * Nothing of the call that fed it is queued; an output that cannot be sent is reported as a
 * `TaskError` for its item.
 *
 * @example
 * try { cluster.feed(item) } catch (e) { if (e instanceof ItemEncodeError) console.error(e.path, e.reason) }
 */
export class ItemEncodeError extends PclusterError {
  override readonly code = "item-encode";
  /** Where the bad value is, from the item: `items[3].meta.cb` (empty when it came over the wire). */
  readonly path: string;
  /** What is wrong with it: `a function cannot be sent`. */
  readonly reason: string;
  /** The item's position among those fed by the call (feed's arguments, or the iterable's items). */
  readonly index: number | undefined;

  constructor(message: string, details?: { path: string; reason: string; index?: number }) {
    super(message);
    this.path = details?.path ?? "";
    this.reason = details?.reason ?? message;
    this.index = details?.index;
  }
}

/**
 * An item or output is larger, encoded, than `maxItemBytes` (the smallest of the root's or setup's
 * limit and every node's `--max-item`). At `feed` it names the item's index among those given, and
 * none of that call's items is queued; a task's output over it becomes a `TaskError` for its item.
 */
export class ItemTooLargeError extends PclusterError {
  override readonly code = "item-too-large";
  /** The item's index among the items of the call that refused it (undefined when rebuilt from the wire). */
  readonly index: number | undefined;
  /** Its encoded size in bytes. */
  readonly size: number | undefined;
  /** The limit it is over, in bytes. */
  readonly limit: number | undefined;

  constructor(message: string, details: { index?: number; size?: number; limit?: number } = {}) {
    super(message);
    this.index = details.index;
    this.size = details.size;
    this.limit = details.limit;
  }
}

/** A task threw, or an item failed after its retries. Given to `errorHandler`. */
export class TaskError<In = unknown> extends PclusterError {
  override readonly code = "task";
  /**
   * The input item it descends from, as it was fed (typed like the pipeline's input), when the root
   * still had it: always for errors reported by a node, undefined for one rebuilt from the wire.
   */
  readonly input: In | undefined;
  /** Name of the task (its export) that threw, or that ran when its worker died. */
  readonly task: string;
  /** The stack trace on the node, when there is one. */
  readonly remoteStack: string | undefined;
  /** True when the item was given up after its worker died on it too often (not a throw). */
  readonly failed: boolean;
  /** The node ("host:port") it happened on. */
  readonly node: string | undefined;
  /** The root's id of the input item it descends from. */
  readonly item: number | undefined;

  constructor(
    message: string,
    details: { task: string; stack?: string; failed?: boolean; node?: string; item?: number; input?: In },
  ) {
    super(message);
    this.input = details.input;
    this.task = details.task;
    this.remoteStack = details.stack;
    this.failed = details.failed ?? false;
    this.node = details.node;
    this.item = details.item;
  }
}

const byCode: Record<string, new (message: string) => PclusterError> = {
  protocol: ProtocolError,
  version: VersionMismatchError,
  auth: AuthError,
  busy: NodeBusyError,
  setup: SetupError,
  timeout: TimeoutError,
  closed: ConnectionClosedError,
  "connection-limit": ConnectionLimitError,
  "no-nodes": NoNodesError,
  "queue-full": QueueFullError,
  state: StateError,
  "item-encode": ItemEncodeError,
  "item-too-large": ItemTooLargeError,
};

/** Rebuilds the typed error a peer answered with. */
export function errorFromWire(code: string, message: string): PclusterError {
  const Class = byCode[code] ?? PclusterError;
  const error = new Class(message);
  if (Class === PclusterError) (error as { code: string }).code = code;
  return error;
}

/** The code and message to send for any thrown value. */
export function errorToWire(error: unknown): { code: string; message: string } {
  if (error instanceof PclusterError) return { code: error.code, message: error.message };
  if (error instanceof Error) return { code: "internal", message: error.message };
  return { code: "internal", message: String(error) };
}

/**
 * A user's mistake on the command line (an unknown flag, a missing or malformed value). The CLI prints
 * its message on one line and exits with code 2, without a stack trace.
 */
export class UsageError extends PclusterError {
  override readonly code = "usage";
}
