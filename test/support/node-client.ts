import { type PclusterError, errorFromWire } from "../../src/errors.ts";
import { dial } from "../../src/protocol/handshake.ts";
import { RecordBatchBuilder, decode, encode } from "../../src/protocol/codec.ts";
import { RecordKind, RecordReader, type TaskErrorReport, forEachDone } from "../../src/protocol/record.ts";
import type { ClientTls, Connection } from "../../src/protocol/connection.ts";
import { blobFrameBytes } from "../../src/protocol/frame.ts";
import type { EventMessage, HelloMessage, Message } from "../../src/protocol/messages.ts";
import type { NodeStatus, SetupArgs, SetupResult } from "../../src/protocol/pipeline.ts";
import { type TaskInput, pipelineHash, readLocalPackages, resolveTaskchain } from "../../src/root/packager.ts";

/** A pipeline as a test describes it: package folders and tasks as "package#export". */
export interface PipelineSpec {
  name: string;
  version: string;
  /** Local package folders (absolute, or relative to the working directory). */
  packages: string[];
  tasks: Array<string | TaskInput>;
  remotePackages?: string[];
  workers?: number;
  maxAttempts?: number;
  resultWindow?: number;
}

/** Builds `setup` arguments the way a root does: packages read as files, tasks found by export, hashed. */
export async function buildSetupArgs(spec: PipelineSpec): Promise<SetupArgs> {
  const local = await readLocalPackages(spec.packages);
  const taskchain = await resolveTaskchain(
    spec.tasks.map((task) => (typeof task === "string" ? { function: task } : task)),
    local,
  );
  const packages = local.map((pkg) => pkg.bundle);
  const remotePackages = spec.remotePackages ?? [];
  const args: SetupArgs = {
    name: spec.name,
    version: spec.version,
    taskchain,
    packages,
    remotePackages,
    hash: pipelineHash(packages, remotePackages),
  };
  if (spec.workers !== undefined) args.workers = spec.workers;
  if (spec.maxAttempts !== undefined) args.maxAttempts = spec.maxAttempts;
  if (spec.resultWindow !== undefined) args.resultWindow = spec.resultWindow;
  return args;
}

/** A TaskError or Failed record as it reached the client. */
export interface ResultError extends TaskErrorReport {
  id: number;
  stage: number;
  kind: "error" | "failed";
}

export interface NodeClientOptions {
  port: number;
  host?: string;
  token?: string;
  tls?: ClientTls;
  /** The name the node shows as this root's (default "test-root-<pid>"). */
  client?: string;
  maxFrameBytes?: number;
  /** Send `credit` back for every results frame as soon as it is handled (default true). */
  autoCredit?: boolean;
  /** Bound on connecting and the handshake (default 5 s). */
  timeoutMs?: number;
}

/** The byte length of the results frame the node sent for this message (what it charged to our credit). */
export function resultsFrameBytes(blob: Uint8Array, idle: number, standing?: number): number {
  return blobFrameBytes("results", standing === undefined ? { idle } : { idle, standing }, blob.length);
}

/**
 * A bare root for node tests, over the real connection layer (`dial`): sets a pipeline up, feeds items
 * as Input records, and collects what comes back (outputs by item id, completions, task errors,
 * events, connection errors), giving credit back for each results frame unless told not to.
 *
 * @example
 * const client = await NodeTestClient.connect({ port });
 * await client.setup({ name: "p", version: "1", packages: [dir], tasks: ["tasks#double"] });
 * await client.waitDone(client.feed([1, 2, 3]));
 */
export class NodeTestClient {
  /** Outputs per root item id, in arrival order. */
  readonly outputs = new Map<number, unknown[]>();
  readonly done = new Set<number>();
  readonly errors: ResultError[] = [];
  readonly events: EventMessage[] = [];
  /** Errors the node sent about the connection itself (not answers to a request). */
  readonly connectionErrors: PclusterError[] = [];
  outputCount = 0;
  resultFrames = 0;
  /** Results frames that said items stood waiting on the node since its last one (`standing`). */
  standingFrames = 0;
  /** Bytes of results frames received (as the node counts them against our credit). */
  resultBytes = 0;
  /** Credit sent back so far. */
  credited = 0;
  autoCredit: boolean;
  #nextId = 1;
  #waiters: Array<() => void> = [];

  private constructor(
    readonly connection: Connection,
    readonly hello: HelloMessage,
    options: NodeClientOptions,
  ) {
    this.autoCredit = options.autoCredit ?? true;
    connection.onMessage = (message) => this.#onMessage(message);
    connection.closed.then(() => this.#notify());
  }

  static async connect(options: NodeClientOptions): Promise<NodeTestClient> {
    const { connection, hello } = await dial({
      hostname: options.host ?? "127.0.0.1",
      port: options.port,
      service: "node",
      token: options.token,
      tls: options.tls,
      client: options.client ?? `test-root-${process.pid}`,
      maxFrameBytes: options.maxFrameBytes,
      connectTimeoutMs: options.timeoutMs ?? 5000,
      timeoutMs: options.timeoutMs ?? 5000,
    });
    if (connection === undefined || hello === undefined)
      throw new Error("dial() resolved without a connection or a hello");
    return new NodeTestClient(connection, hello, options);
  }

  get isClosed(): boolean {
    return this.connection.isClosed;
  }

  /** Resolves with the close reason (undefined for a clean close). */
  get closed(): Promise<PclusterError | undefined> {
    return this.connection.closed;
  }

  request<T = unknown>(cmd: string, args?: unknown, timeoutMs = 15_000): Promise<T> {
    return this.connection.request<T>(cmd, args, timeoutMs);
  }

  /** Sets a pipeline up (installing may take a while: bounded by `timeoutMs`, default 60 s). */
  async setup(spec: PipelineSpec | SetupArgs, timeoutMs = 60_000): Promise<SetupResult> {
    const args = "hash" in spec ? spec : await buildSetupArgs(spec);
    return this.request<SetupResult>("setup", args, timeoutMs);
  }

  status(): Promise<NodeStatus> {
    return this.request<NodeStatus>("status");
  }

  /**
   * Feeds items (each an Input record starting at task `stage`), `batchItems` to a feed frame.
   * Returns their ids, which the client numbers 1, 2, 3… over its whole life.
   */
  feed(items: readonly unknown[], options: { stage?: number; batchItems?: number } = {}): number[] {
    const { stage = 0, batchItems = 256 } = options;
    const ids: number[] = [];
    const builder = new RecordBatchBuilder();
    for (const item of items) {
      const id = this.#nextId++;
      ids.push(id);
      builder.append(RecordKind.Input, stage, 0, id, encode(item));
      if (builder.count >= batchItems) this.connection.sendFrame(builder.finishFrame("feed"));
    }
    if (builder.count > 0) this.connection.sendFrame(builder.finishFrame("feed"));
    return ids;
  }

  /** Gives the node `bytes` more result credit. */
  grant(bytes: number): void {
    this.credited += bytes;
    this.connection.send({ t: "credit", bytes });
  }

  /** Waits (bounded) until every id is Done; rejects early if the connection closes first. */
  async waitDone(ids: Iterable<number>, timeoutMs = 20_000): Promise<void> {
    const wanted = [...ids];
    await this.waitFor(
      () => wanted.every((id) => this.done.has(id)),
      timeoutMs,
      () => {
        const missing = wanted.filter((id) => !this.done.has(id));
        return `${missing.length} of ${wanted.length} items not done (first: ${missing.slice(0, 5).join(", ")})`;
      },
    );
  }

  /** Waits (bounded) until `ready()` holds, checked after each message; rejects if the connection closes first. */
  async waitFor(ready: () => boolean, timeoutMs = 10_000, what: () => string = () => "condition"): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (ready()) return;
      if (this.isClosed) {
        const reason = await this.closed;
        throw new Error(`connection closed (${reason?.message ?? "cleanly"}) while waiting: ${what()}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms: ${what()}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 500));
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** The outputs of these items, each item's list in arrival order. */
  outputsOf(ids: readonly number[]): unknown[][] {
    return ids.map((id) => this.outputs.get(id) ?? []);
  }

  /** Closes the connection (what is queued is sent first). */
  close(): void {
    this.connection.close();
  }

  #onMessage(message: Message): void {
    if (message.t === "results") this.#onResults(message.blob, message.idle, message.standing);
    else if (message.t === "event") this.events.push(message);
    else if (message.t === "err") this.connectionErrors.push(errorFromWire(message.code, message.message));
    this.#notify();
  }

  #onResults(blob: Uint8Array, idle: number, standing: number | undefined): void {
    const frameBytes = resultsFrameBytes(blob, idle, standing);
    this.resultFrames++;
    if (standing === 1) this.standingFrames++;
    this.resultBytes += frameBytes;
    const reader = new RecordReader(blob);
    while (reader.next()) {
      switch (reader.kind) {
        case RecordKind.Output: {
          const value = decode(blob, reader.payloadStart, reader.payloadEnd);
          const list = this.outputs.get(reader.id);
          if (list === undefined) this.outputs.set(reader.id, [value]);
          else list.push(value);
          this.outputCount++;
          break;
        }
        case RecordKind.Done:
          forEachDone(blob, reader.payloadStart, reader.payloadEnd, (id) => this.done.add(id));
          break;
        case RecordKind.TaskError:
        case RecordKind.Failed: {
          const report = decode(blob, reader.payloadStart, reader.payloadEnd) as TaskErrorReport;
          this.errors.push({
            ...report,
            id: reader.id,
            stage: reader.stage,
            kind: reader.kind === RecordKind.Failed ? "failed" : "error",
          });
          break;
        }
        default:
          throw new Error(`unexpected record kind ${reader.kind} in a results frame`);
      }
    }
    if (this.autoCredit && !this.isClosed) this.grant(frameBytes);
  }

  #notify(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }
}
