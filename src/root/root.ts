import { diagnostics } from "../diagnostics.ts";
import {
  NoNodesError,
  NodeBusyError,
  type PclusterError,
  QueueFullError,
  SetupError,
  StateError,
  TaskError,
} from "../errors.ts";
import { getDefaultLogAddress, log, setDefaultLogAddress, setLogToken } from "../log/log.ts";
import type { HttpEndpoint } from "../metrics/endpoint.ts";
import { RecentErrors } from "../metrics/recent-errors.ts";
import { type Endpoint, type HostPort, parseAddress } from "../protocol/address.ts";
import { KeptBuffers, ownMemory } from "../protocol/kept-buffers.ts";
import { decode } from "../protocol/codec.ts";
import { DEFAULT_MAX_ITEM_BYTES, checkMaxItemBytes } from "../protocol/limits.ts";
import type { TaskErrorReport } from "../protocol/record.ts";
import type { NodeStatus, SetupArgs, SetupResult, TaskStats } from "../protocol/pipeline.ts";
import { WaitList } from "../wait-list.ts";
import { OutputChannel } from "./channel.ts";
import type { DashboardOptions } from "./dashboard/server.ts";
import type { ScanTarget } from "./discovery.ts";
import { mergeTaskStats } from "./inspect.ts";
import { checkConcurrency } from "./task-options.ts";
import type { LocalCluster } from "./local.ts";
import { NodeClient } from "./node-client.ts";
import type { RootObservation } from "./observation.ts";
import type { RootOptions, RunOptions } from "./options.ts";
import type {
  ChainInput,
  ChainOutput,
  CheckedChain,
  CombineFor,
  CombineResult,
  CombinerArgs,
  TaskDefinition,
  Travelling,
  TravellingItems,
} from "./chain-types.ts";
import { CombinedTotal, resolveCombine } from "./combine.ts";
import { pipelineHash, readLocalPackages, resolveTaskchain } from "./packager.ts";
import { DEFAULT_MAX_HELD_BYTES, ResultPump, isThenable } from "./results.ts";
import { type NodeLane, type Resend, Scheduler } from "./scheduler.ts";

export type { RootOptions, RunOptions };

export type { TaskDefinition };

/** `Inferred` when the taskchain tells it, else what the root was declared with (`new Root<In, Out>`). */
type Known<Declared, Inferred> = unknown extends Inferred ? Declared : Inferred;

/** `Out`: the outputs of the taskchain, as `outputHandler` gets them. */
export interface SetupOptions<Out = unknown, In = unknown> {
  /** Folders of packages whose exports are the tasks; shipped to every node. */
  localPackages?: string[];
  /** npm specs (`lodash@4`) installed on every node, into this pipeline's own folder. */
  remotePackages?: string[];
  /** Called on the root with every output, in arrival order; a returned promise holds the next ones. */
  outputHandler?: (output: Out) => unknown;
  /** Called with every task error (the item is dropped) and every item given up after retries. */
  errorHandler?: (error: TaskError<In>) => unknown;
  /** Worker threads on each node (default: the node's own setting, its core count). */
  workersPerNode?: number;
  /** Times an item may take its worker down before it is given up (default 3). */
  maxAttempts?: number;
  /**
   * A task call that runs longer than this (more exactly: a worker that finishes no task call and
   * writes no output for this long while it has an item) ends its worker; the item counts an attempt,
   * as when a worker dies (default: no limit).
   */
  taskTimeoutMs?: number;
  /**
   * Items one worker has in progress at once, for async tasks (I/O: fetches, queries) that spend their
   * time waiting: a worker starts the next item while earlier ones wait. A task entry's own
   * `concurrency` overrides it for that task. Sync tasks run one at a time whatever it says (default 1).
   */
  concurrency?: number;
  /** Result bytes a node may send ahead of the root handling them (default 8 MiB). */
  resultWindow?: number;
  /**
   * Largest item or output, encoded, for this pipeline (default: the root's `maxItemBytes`, 1 GiB).
   * The smallest of it and every node's `--max-item` holds (see `RootOptions.maxItemBytes`).
   */
  maxItemBytes?: number;
  /**
   * `"exactly-once"` (the default): an item's outputs reach `outputHandler` / `process()` once, whatever
   * dies — the root hands them out when the item is done on its node, and drops those of an attempt
   * that did not finish. `"at-least-once"`: outputs stream out as they come (an item that runs again
   * after a crash gives them again); for unbounded fan-out, and it lets idle workers share a fan-out.
   */
  delivery?: "exactly-once" | "at-least-once";
  /**
   * Exactly-once: output bytes the root may hold for items not done yet (default 64 MiB, or room for
   * one output of `maxItemBytes` and 16 MiB more if that is larger). An item whose outputs would go
   * past it loses them and is reported as a `TaskError` naming this limit.
   */
  maxHeldBytes?: number;
  /**
   * Fold the outputs where they are made instead of sending each to the root: `"sum-by-key"` (outputs
   * `{ [key]: number }`, summed per key), `"count"`, or `{ function: SomeClass, args }`, a class exported
   * by one of `localPackages` with `add(output)`, `merge(other)` and `result()`. Each worker keeps a
   * partial and ships it with the Done of exactly the items it covers, so the total stays exact when a
   * node or worker dies; `result()` (and the value `run()` resolves to) gives the merged total. Outputs
   * then do not reach `outputHandler`. Typed by the chain: see `CombineFor`.
   */
  combine?: CombineFor<Out>;
  /** Bound on each node's setup, installs included (default 15 minutes). */
  setupTimeoutMs?: number;
  /**
   * Set up even while items of the running pipeline are unfinished: they are discarded (default
   * false: such a setup is refused with a `StateError`).
   */
  replace?: boolean;
}

/** How long a lost node is tried again while a pipeline runs (see `RootOptions.rejoinTimeoutMs`). */
const DEFAULT_REJOIN_MS = 60_000;

/** Items `run()` takes from a (sync) iterable at a time, at most. */
const RUN_CHUNK_ITEMS = 4096;
/**
 * Outputs `process()` keeps for its loop, at most, and their bytes (encoded): beyond either, results
 * wait on the nodes (their result windows), not in the root's memory.
 */
const PROCESS_OUTPUTS = 1024;
const PROCESS_OUTPUT_BYTES = 16 * 1024 * 1024;
/** Items `feedAsync` queues at once, under `maxQueuedBytes`, before the size of any is known. */
const FIRST_CHUNK_ITEMS = 16;
/** The least of `run()`'s and `process()`'s default bound on the queue's bytes (see RootOptions.maxQueuedBytes). */
const DEFAULT_MIN_QUEUED_BYTES = 64 * 1024 * 1024;

export interface LocalOptions extends RootOptions {
  /** Node processes (default 2). */
  nodes?: number;
  /** Worker threads per node (default: cores / nodes, at least 1). */
  workers?: number;
  /** MB of memory each node may use before it ends a runaway worker (default: 80% of memory, shared between the nodes). */
  memoryLimitMb?: number;
  /**
   * Where the log server writes every node's and task's lines; kept after the cluster stops. A relative
   * path is taken from the current directory. Default: a file in the cluster's temp folder, removed
   * with it when the cluster stops.
   */
  logFile?: string;
}

/** A node as `status()` reports it. */
export type NodeReport = NodeStatus & { address: string };

/** Counts since setup, for progress displays. */
export interface Progress {
  fed: number;
  done: number;
  /** Outputs handed out; with a combiner, outputs folded (counted as the partials holding them arrive). */
  outputs: number;
  errors: number;
  resent: number;
  queued: number;
  inFlight: number;
}

/** A pipeline as set up: what a node that joins or comes back is set up with. */
interface RunningPipeline {
  args: SetupArgs;
  options: SetupOptions;
}

const MAX_UNHANDLED_ERROR_NOTES = 10;

/**
 * `Root<In, Out>`: the client of the whole cluster. It ships the task code to every node, schedules the items
 * it is fed across them in adaptive batches, hands every output to your handler, and re-sends the
 * unfinished items of a node that is lost to the others. `In` is what it is fed and `Out` what it
 * gives: `setup` works them out from the taskchain and returns this root typed by them (or declare
 * them: `new Root<In, Out>(...)`).
 *
 * @example
 * import { Root } from "pcluster";
 * import { simpleTask, generatorTask, DropItem } from "./task_package";
 *
 * const cluster = new Root([["127.0.0.1", 6000], ["127.0.0.1", 6001]]);
 * await cluster.setup("example-pipeline", "1.0", [
 *   { function: simpleTask },
 *   { function: generatorTask, isGenerator: true },
 *   { function: DropItem, args: ["item dropped"] },
 * ], { localPackages: ["./task_package"], outputHandler: (out) => console.log(out) });
 * cluster.feed("hello world!", "its me an input item!");
 * await cluster.waitEmpty();
 * await cluster.reset();
 */
export class Root<In = unknown, Out = unknown, Total = unknown> implements AsyncDisposable {
  readonly #options: RootOptions;
  readonly #endpoints = new Map<string, Endpoint>();
  readonly #clients = new Map<string, NodeClient>();
  readonly #connecting = new Map<string, Promise<NodeClient>>();
  /**
   * Memory results frames of more than a socket read are assembled in, and results of megabytes joined
   * in (they come in parts): taken again for the next once a results message is handled and the outputs
   * it held for items' Done are handed out (see ResultPump).
   */
  readonly #joined = new KeptBuffers(ownMemory);
  /** Bytes an item waiting in the queue took, on average, when last looked at (see #itemsForBytes). */
  #itemBytes: number | undefined;
  readonly #lanes = new Map<NodeClient, NodeLane>();
  readonly #scheduler: Scheduler;
  readonly #results: ResultPump<NodeClient>;
  #setupOptions: SetupOptions = {};
  #running = false;
  #closed = false;
  /** Set when every node is lost: every wait and feed fails with it until the next setup. */
  #failure: PclusterError | undefined;
  readonly #waits = new WaitList();
  #local: LocalCluster | undefined;
  /** Set when `reset()` stopped this root's local cluster: its nodes are gone. */
  #localStopped = false;
  /** The local cluster's log server, while `Root.local` made it the default log address (undone on reset). */
  #localLogDefault: { address: readonly [host: string, port: number]; token: boolean } | undefined;
  #outputOverride: ((output: unknown, bytes: number) => unknown) | undefined;
  /** What the running pipeline was set up with: a node that joins or comes back gets the same. */
  #pipeline: RunningPipeline | undefined;
  /** Set while every node is lost and a local cluster may still bring one back. */
  #noNodesTimer: ReturnType<typeof setTimeout> | undefined;
  /** Lost nodes being tried again whose first try is not over yet (see `#onNodeLost`). */
  readonly #firstTries = new Set<Promise<void>>();
  /** Nodes being tried again after they were lost (see `#join`), by address: `removeNode` may take them out too. */
  readonly #rejoining = new Set<string>();
  /** Nodes taken out by `removeNode`: a join of theirs still under way gives up (`addNode` puts one back). */
  readonly #removed = new Set<string>();
  /** While a `process()` left early has items still running (see `#abandon`). */
  #abandoned: Promise<void> | undefined;
  #progress = { fed: 0, done: 0, outputs: 0, errors: 0, resent: 0 };
  #unhandledErrors = 0;
  /** The last task errors, and the dashboards and metrics this root serves (stopped on reset). */
  readonly #recentErrors = new RecentErrors();
  readonly #served = new Set<HttpEndpoint>();
  /** With setup's `combine`: the partials merged so far. */
  #total: CombinedTotal | undefined;

  /** @param nodeAddrs nodes as `[host, port]` or `"host:port"`; more with `addNode` or `searchNodes`. */
  constructor(nodeAddrs: HostPort[] = [], options: RootOptions = {}) {
    this.#options = { ...options, token: options.token ?? process.env.PCLUSTER_TOKEN };
    if (options.maxItemBytes !== undefined) checkMaxItemBytes(options.maxItemBytes, "Root option maxItemBytes");
    for (const addr of nodeAddrs) this.addNode(addr);
    this.#scheduler = new Scheduler(options.scheduler);
    this.#scheduler.onPumped = () => this.#settle();
    this.#results = new ResultPump<NodeClient>(
      {
        output: (value, bytes) => this.#onOutput(value, bytes),
        taskError: (client, item, report, failed) => this.#onTaskError(client, item, report, failed),
        done: (client, ids) => this.#onDone(client, ids),
        partial: (client, bytes, start, end) => this.#onPartial(client, bytes, start, end),
        handled: (client, bytes) => client.credit(bytes),
      },
      this.#joined,
    );
    this.#results.onIdle = () => this.#settle();
  }

  /**
   * Starts a local cluster — a log server and `nodes` real node processes on free loopback ports — and
   * returns a Root connected to them. The processes stop on `reset()`, `close()` or process exit.
   *
   * @example
   * await using cluster = await Root.local({ nodes: 2 });
   */
  static async local<In = unknown, Out = unknown>(options: LocalOptions = {}): Promise<Root<In, Out>> {
    const { nodes, workers, memoryLimitMb, token, logFile } = options;
    const { startLocalCluster } = await import("./local.ts");
    const cluster = await startLocalCluster({ nodes, workers, memoryLimitMb, token, logFile });
    const root = new Root<In, Out>(cluster.nodes, options);
    root.#local = cluster;
    if (getDefaultLogAddress() === undefined) {
      setDefaultLogAddress(cluster.logAddress);
      if (options.token) setLogToken(options.token);
      root.#localLogDefault = { address: cluster.logAddress, token: Boolean(options.token) };
    }
    return root;
  }

  /** The nodes this root knows, as "host:port". */
  get nodes(): string[] {
    return [...this.#endpoints.keys()];
  }

  /**
   * The local cluster's log file (an absolute path), for a Root made by `Root.local`. Without the
   * `logFile` option it lies in the cluster's temp folder and is removed when the cluster stops.
   */
  get logFile(): string | undefined {
    return this.#local?.logFile;
  }

  get progress(): Progress {
    return { ...this.#progress, queued: this.#scheduler.queued, inFlight: this.#scheduler.inFlight };
  }

  /**
   * Takes a node out, as `addNode` puts one in: while a pipeline runs, the node gets no more items and
   * those it has finish there (their outputs handed out as usual); then its pipeline is reset — the node
   * is free for another root — and this root forgets it. Past `timeoutMs` (default: no bound), what it
   * has not finished goes to the other nodes, as when a node is lost. Resolves once the node is out.
   *
   * @example
   * await cluster.removeNode("10.0.0.5:6000"); // the machine is needed elsewhere; the run goes on
   */
  async removeNode(addr: HostPort, options: { timeoutMs?: number } = {}): Promise<void> {
    this.#assertOpen();
    const endpoint = parseAddress(addr, "node address");
    if (!this.#endpoints.has(endpoint.key) && !this.#rejoining.has(endpoint.key)) {
      throw new StateError(`removeNode: ${endpoint.key} is not one of this root's nodes (${this.nodes.join(", ")})`);
    }
    this.#removed.add(endpoint.key); // a join of it still under way gives up
    const client = this.#clients.get(endpoint.key);
    const lane = client === undefined ? undefined : this.#lanes.get(client);
    if (client !== undefined && lane !== undefined) {
      lane.draining = true;
      this.#note(
        "info",
        `node ${client.address} is being removed: it gets no more items, and finishes its ${lane.inFlight} items in flight`,
      );
      const { timeoutMs } = options;
      const bound = timeoutMs === undefined ? undefined : AbortSignal.timeout(timeoutMs);
      // A lost node, a reset or a failed run end the wait too: the node is out then anyway.
      await this.#when(() => lane.inFlight === 0 || !this.#lanes.has(client), bound).catch(() => {});
    }
    this.#endpoints.delete(endpoint.key); // before it leaves: a node removed is not tried again
    if (client === undefined) return;
    if (lane !== undefined && this.#lanes.has(client))
      this.#onNodeLost(client, new StateError("removed by removeNode()"));
    await client.request("reset", undefined, 10_000).catch(() => {}); // free for another root
    client.close();
    this.#clients.delete(endpoint.key);
  }

  /** Adds a node by address (it is set up with the next `setup`). */
  addNode(addr: HostPort): void {
    const endpoint = parseAddress(addr, "node address");
    this.#removed.delete(endpoint.key);
    const known = this.#endpoints.has(endpoint.key);
    this.#endpoints.set(endpoint.key, endpoint);
    // While a pipeline runs, a new node is set up with it and joins the run.
    if (!known && this.#running && this.#failure === undefined && this.#pipeline !== undefined) {
      void this.#join(endpoint, this.#pipeline, 0);
    }
  }

  /**
   * Scans a network, or every address a DNS name resolves to, for nodes on `port` and adds every idle
   * one; busy nodes (running another root's pipeline) are skipped, and said so. Returns how many nodes
   * were added.
   *
   * @example
   * await cluster.searchNodes({ network: "192.168.1.0/24", port: 6000 });
   * await cluster.searchNodes({ dns: "pcluster-nodes.default.svc.cluster.local", port: 6000 });
   */
  async searchNodes(options: ScanTarget & { port: number; timeoutMs?: number; concurrency?: number }): Promise<number> {
    const { scanForNodes } = await import("./discovery.ts");
    const found = await scanForNodes({ ...options, token: this.#options.token, tls: this.#options.tls });
    let added = 0;
    for (const node of found.idle) {
      if (!this.#endpoints.has(node.address)) added++;
      this.addNode(node.address);
    }
    for (const node of found.busy) {
      const pipeline = node.status.pipeline!;
      this.#note(
        "info",
        `searchNodes: skipped busy node ${node.address}: it runs "${pipeline.name}" ${pipeline.version} for root ${pipeline.owner}`,
      );
    }
    for (const node of found.refused)
      this.#note("warn", `searchNodes: node ${node.address} refused us: ${node.reason}`);
    return added;
  }

  /**
   * Ships the taskchain and its packages to every node and starts their workers. A task function that
   * no local package exports, a busy node, an unreachable node or a failed install is a clear error,
   * and then no node is left set up. Setting up again replaces the running pipeline.
   *
   * Each task must take what the one before gives (a type error on the task's entry says what does
   * not fit); the promise gives this same root, typed by the chain: fed what the first task takes,
   * giving what the last one gives.
   *
   * @example
   * const pipeline = await cluster.setup("words", 1, [{ function: splitWords, isGenerator: true }], { localPackages: ["./tasks"] });
   * for await (const word of pipeline.process(lines)) console.log(word.toUpperCase()); // word: string
   */
  async setup<
    const Chain extends readonly TaskDefinition[],
    const Combine extends CombineFor<Known<Out, ChainOutput<Chain>>> | undefined = undefined,
  >(
    name: string,
    version: string | number,
    taskchain: CheckedChain<Chain, In, Out>,
    given?: SetupOptions<Known<Out, ChainOutput<Chain>>, Known<In, ChainInput<Chain>>> & {
      combine?: Combine;
    } & CombinerArgs<Combine>,
  ): Promise<Root<Known<In, ChainInput<Chain>>, Known<Out, ChainOutput<Chain>>, CombineResult<Combine>>> {
    const options = (given ?? {}) as SetupOptions; // typed by the chain for the caller; checked below
    this.#assertOpen();
    this.#assertLocalRunning("set up");
    const numeric = [
      "workersPerNode",
      "maxAttempts",
      "taskTimeoutMs",
      "resultWindow",
      "setupTimeoutMs",
      "maxHeldBytes",
    ] as const;
    for (const option of numeric) {
      const value = options[option];
      if (value !== undefined && !(Number.isInteger(value) && value > 0)) {
        throw new TypeError(`setup option ${option} must be a positive integer, got ${Bun.inspect(value)}`);
      }
    }
    if (options.concurrency !== undefined) checkConcurrency(options.concurrency, "setup option concurrency");
    const maxItemBytes = checkMaxItemBytes(
      options.maxItemBytes ?? this.#options.maxItemBytes ?? DEFAULT_MAX_ITEM_BYTES,
      options.maxItemBytes === undefined ? "Root option maxItemBytes" : "setup option maxItemBytes",
    );
    const delivery = options.delivery ?? "exactly-once";
    if (delivery !== "exactly-once" && delivery !== "at-least-once") {
      throw new TypeError(
        `setup option delivery must be "exactly-once" or "at-least-once", got ${Bun.inspect(delivery)}`,
      );
    }
    if (this.#running && this.#failure === undefined && !this.#isEmpty() && options.replace !== true) {
      throw new StateError(
        `cannot set up "${name}": ${this.#scheduler.queued + this.#scheduler.inFlight} items of the running pipeline are ` +
          "not finished; await waitEmpty() first, or pass { replace: true } to discard them",
      );
    }
    if (this.#running) await this.#stopPipeline("set up again");
    const packages = await readLocalPackages(options.localPackages ?? []);
    const tasks = await resolveTaskchain(taskchain as readonly TaskDefinition[], packages);
    const combiner = await resolveCombine(options.combine, packages);
    const bundles = packages.map((local) => local.bundle);
    const remotePackages = options.remotePackages ?? [];
    const args: SetupArgs = {
      name,
      version: String(version),
      taskchain: tasks,
      packages: bundles,
      remotePackages,
      hash: pipelineHash(bundles, remotePackages),
      workers: options.workersPerNode,
      maxAttempts: options.maxAttempts,
      taskTimeoutMs: options.taskTimeoutMs,
      concurrency: options.concurrency,
      resultWindow: options.resultWindow,
      maxItemBytes,
      // A fan-out shared between workers has parts whose outputs a dead worker's retry could not retract.
      shareFanOut: delivery === "at-least-once",
    };
    if (combiner !== undefined) args.combine = combiner.spec;
    if (this.#endpoints.size === 0) {
      throw new NoNodesError("no nodes to set up: pass addresses to new Root(...), call addNode(), or searchNodes()");
    }
    const endpoints = [...this.#endpoints.values()];
    const outcomes = await Promise.allSettled(endpoints.map((endpoint) => this.#setupNode(endpoint, args, options)));
    const failures = outcomes.flatMap((outcome, index) =>
      outcome.status === "rejected" ? [{ node: endpoints[index]!.key, error: outcome.reason as Error }] : [],
    );
    if (failures.length > 0) {
      // All or nothing: every node this setup reached is let go at once, for this root or any other.
      const reached = outcomes.flatMap((outcome) => (outcome.status === "fulfilled" ? [outcome.value.client] : []));
      await Promise.all(reached.map((client) => client.request("reset", undefined, 10_000).catch(() => {})));
      await this.#stopPipeline("another node failed to set up");
      const lines = failures.map((failure) => `  ${failure.node}: ${failure.error.message}`).join("\n");
      const message = `setup of "${name}" ${args.version} failed on ${failures.length} of ${endpoints.length} nodes:\n${lines}`;
      throw failures.every((failure) => failure.error instanceof NodeBusyError)
        ? new NodeBusyError(message)
        : new SetupError(message);
    }
    this.#setupOptions = options;
    // Room for at least one item's output of the largest size the pipeline takes.
    this.#results.configure(delivery === "exactly-once", options.maxHeldBytes ?? heldBytesFor(maxItemBytes));
    this.#total = combiner === undefined ? undefined : new CombinedTotal(combiner);
    this.#pipeline = { args, options };
    this.#progress = { fed: 0, done: 0, outputs: 0, errors: 0, resent: 0 };
    this.#unhandledErrors = 0;
    this.#recentErrors.clear();
    this.#failure = undefined;
    this.#running = true;
    this.#scheduler.maxItemBytes = maxItemBytes; // and no more than any node takes (see #addLane)
    freeAtExit(this);
    for (const outcome of outcomes) {
      const { client, result } = (outcome as PromiseFulfilledResult<{ client: NodeClient; result: SetupResult }>).value;
      this.#addLane(client, result);
    }
    this.#note(
      "info",
      `"${name}" ${args.version} set up on ${endpoints.length} nodes (${this.#scheduler.lanes.reduce((n, lane) => n + lane.workers, 0)} workers)`,
    );
    this.#updateKeepAlive();
    // The same root: only its type changes, to the one the taskchain gives.
    return this as Root<unknown, unknown, unknown> as Root<
      Known<In, ChainInput<Chain>>,
      Known<Out, ChainOutput<Chain>>,
      CombineResult<Combine>
    >;
  }

  /**
   * Queues items for the cluster. Each is encoded now; an item holding a value that cannot be carried
   * as itself (README: "What an item may be") throws an `ItemEncodeError` naming it and the path, e.g.
   * `items[3].meta.cb: a function cannot be sent`; one larger than `maxItemBytes` throws
   * `ItemTooLargeError` naming its index. Then nothing of the call is queued.
   * For a large array use `feedMany(array)`: a spread of some 500 000 arguments or more overflows the stack.
   */
  feed<const Items extends readonly In[]>(...items: TravellingItems<Items>): void {
    this.#enqueue(items, 0);
  }

  /**
   * Like `feed`, for the items of an array or any iterable, however many.
   *
   * @example
   * cluster.feedMany(lines); // not cluster.feed(...lines) for millions of lines
   */
  feedMany<T extends In>(iterable: readonly Travelling<T>[] | Iterable<Travelling<T>>): void {
    if (
      typeof iterable === "string" ||
      typeof (iterable as Partial<Iterable<unknown>>)?.[Symbol.iterator] !== "function"
    ) {
      throw new TypeError(
        `feedMany takes an array or an iterable of items, got ${preview(iterable)}; to feed one item, call feed(item)`,
      );
    }
    this.#enqueue(Array.isArray(iterable) ? iterable : Array.from(iterable), 0);
  }

  /** Queues `items`; a refused one is named by its index counted from `firstIndex`. */
  #enqueue(items: readonly unknown[], firstIndex: number): void {
    this.#assertRunning("feed");
    const maxQueued = this.#options.maxQueued;
    if (maxQueued !== undefined && this.#scheduler.queued + items.length > maxQueued) {
      throw new QueueFullError(
        `the root's queue holds ${this.#scheduler.queued} items and is bounded at ${maxQueued}; ` +
          "use `await cluster.feedAsync(item)` to wait for room",
      );
    }
    const maxQueuedBytes = this.#options.maxQueuedBytes;
    if (maxQueuedBytes !== undefined && this.#scheduler.queuedBytes >= maxQueuedBytes) {
      throw new QueueFullError(
        `the root's queue holds ${this.#scheduler.queuedBytes} bytes of items and is bounded at ${maxQueuedBytes} ` +
          "(maxQueuedBytes); use `await cluster.feedAsync(item)` to wait for room",
      );
    }
    this.#scheduler.enqueueValues(items, firstIndex); // an item that cannot be carried throws ItemEncodeError
    this.#progress.fed += items.length;
    this.#updateKeepAlive();
  }

  /** Like `feed`, but waits for room when the queue is bounded (`maxQueued`), feeding as much as fits each time. */
  async feedAsync<const Items extends readonly In[]>(...items: TravellingItems<Items>): Promise<void> {
    const { maxQueued, maxQueuedBytes } = this.#options;
    if (maxQueued === undefined && maxQueuedBytes === undefined) return this.#enqueue(items, 0);
    const bound = { items: maxQueued ?? Number.POSITIVE_INFINITY, bytes: maxQueuedBytes ?? Number.POSITIVE_INFINITY };
    for (let at = 0; at < items.length; ) {
      if (!this.#hasRoom(bound)) await this.#room(bound);
      const take = Math.min(items.length - at, bound.items - this.#scheduler.queued, this.#itemsForBytes(bound.bytes));
      this.#enqueue(items.slice(at, at + take), at);
      at += take;
    }
  }

  /** Resolves when the root's queue is empty and some worker somewhere is idle: time to feed more. */
  waitInput(): Promise<void> {
    return this.#when(() => this.#scheduler.queued === 0 && this.#scheduler.lanes.some((lane) => lane.idleWorkers > 0));
  }

  /** Resolves when every fed item and everything it generated is finished and every output handled. */
  waitEmpty(): Promise<void> {
    return this.#when(() => this.#isEmpty());
  }

  #isEmpty(): boolean {
    return this.#scheduler.queued === 0 && this.#scheduler.inFlight === 0 && this.#results.idle;
  }

  /**
   * Feeds every item of an (async) iterable, holding back while the cluster is busy, then waits until all
   * is done. `{ progress: true }` shows a progress bar on stderr (see `RunOptions`). With `signal`,
   * aborting stops reading the iterable and rejects with the signal's reason; the items already fed
   * still finish, and their outputs go to the `outputHandler`. With setup's `combine`, resolves to the
   * merged total (as `result()` gives it); else to undefined.
   */
  async run<T extends In>(
    items: Iterable<Travelling<T>> | AsyncIterable<Travelling<T>>,
    options: RunOptions = {},
  ): Promise<Total> {
    this.#assertRunning("run");
    const signal = options.signal as AbortSignal | undefined; // a real one (see AbortSignalLike)
    signal?.throwIfAborted();
    await this.#abandoned;
    using _display = progressDisplay(options.progress, items, () => this.progress);
    await this.#feedAll(items, signal);
    await this.#when(() => this.#isEmpty(), signal);
    return this.#total?.result() as Total; // with a combiner, the total so far
  }

  /** Feeds every item of `items` as the queue has room, until they are all fed or `signal` aborts. */
  async #feedAll(items: Iterable<unknown> | AsyncIterable<unknown>, signal: AbortSignal | undefined): Promise<void> {
    const bound = {
      items: this.#options.maxQueued ?? this.#defaultBound(),
      bytes: this.#options.maxQueuedBytes ?? this.#defaultBytesBound(),
    };
    if (Symbol.iterator in items) {
      // Items that are at hand go in chunks, as much as the queue has room for: no promise per item.
      const iterator = (items as Iterable<unknown>)[Symbol.iterator]();
      let taken = 0;
      try {
        for (let done = false; !done; ) {
          signal?.throwIfAborted();
          if (!this.#hasRoom(bound)) await this.#room(bound, signal);
          const chunk: unknown[] = [];
          const room = Math.min(RUN_CHUNK_ITEMS, bound.items - this.#scheduler.queued);
          const bytesRoom = bound.bytes - this.#scheduler.queuedBytes;
          // An item's size is known only once it is encoded: until items were queued, each is judged by
          // a glance (see roughBytes), and after, by what those queued took on average — but for the
          // first of each chunk, glanced at too: a new run may bring items of another size (8 MiB ones
          // after documents of 20 KB were read 3 000 at once, all of them).
          let perItem = this.#itemBytesNow();
          let pulled = 0;
          while (chunk.length < room && pulled < bytesRoom) {
            const step = iterator.next();
            if (step.done === true) {
              done = true;
              break;
            }
            chunk.push(step.value);
            if (perItem !== undefined && chunk.length > 1) pulled += perItem;
            else {
              const rough = roughBytes(step.value);
              pulled += rough;
              if (perItem !== undefined && rough > perItem) perItem = rough;
            }
          }
          if (chunk.length > 0) this.#enqueue(chunk, taken);
          taken += chunk.length;
        }
      } catch (error) {
        iterator.return?.(); // as for-of does when its body throws
        throw error;
      }
    } else {
      let taken = 0;
      for await (const item of items) {
        signal?.throwIfAborted(); // leaving the loop closes the iterable
        if (!this.#hasRoom(bound)) await this.#room(bound, signal);
        this.#enqueue([item], taken++);
      }
    }
  }

  /**
   * Runs an (async) iterable through the cluster and yields the outputs as they come. Input is read
   * only as fast as outputs are consumed.
   *
   * Leaving early — `break`, `return` or a throw in the `for await`, or aborting `signal` — stops
   * reading `items` at once. The items already fed finish on the nodes and their outputs are discarded;
   * the next `process()` or `run()` starts once they are done (so its outputs are never mixed with
   * theirs). Aborting makes the loop throw the signal's reason at its next step; outputs that were
   * waiting for it are discarded with the rest.
   *
   * @example
   * for await (const out of cluster.process(lines)) console.log(out);
   */
  async *process<T extends In>(
    items: Iterable<Travelling<T>> | AsyncIterable<Travelling<T>>,
    options: RunOptions = {},
  ): AsyncGenerator<Out> {
    this.#assertRunning("process");
    if (this.#total !== undefined) {
      throw new StateError(
        "process() yields outputs, and with setup's combine they are folded on the workers instead: " +
          "run() resolves to the total (result() gives it so far)",
      );
    }
    const outer = options.signal as AbortSignal | undefined; // a real one (see AbortSignalLike)
    outer?.throwIfAborted();
    await this.#abandoned;
    if (this.#outputOverride !== undefined) throw new StateError("process() is already running on this root");
    using _display = progressDisplay(options.progress, items, () => this.progress); // gone when the loop is left
    const channel = new OutputChannel<Out>(PROCESS_OUTPUTS, PROCESS_OUTPUT_BYTES);
    const stop = new AbortController();
    const signal = outer === undefined ? stop.signal : AbortSignal.any([stop.signal, outer]);
    this.#outputOverride = (output, bytes) => channel.push(output as Out, bytes); // outputs are what the taskchain gives
    const feeding = this.#feedAll(items, signal)
      .then(() => this.#when(() => this.#isEmpty(), signal))
      .then(
        () => channel.end(),
        (error) => channel.fail(error),
      );
    // An abort ends the loop at its next step, not after the outputs already waiting for it.
    const aborted = () => channel.abort(outer!.reason);
    outer?.addEventListener("abort", aborted, { once: true });
    let finished = false;
    try {
      yield* channel;
      await feeding;
      finished = true;
    } finally {
      outer?.removeEventListener("abort", aborted);
      if (finished) this.#outputOverride = undefined;
      else this.#abandon(channel, stop, feeding);
    }
  }

  /**
   * A `process()` left early: no more of its input is read, what it pushes is dropped, and its items
   * already fed are let finish with their outputs discarded. `#abandoned` settles once they are done.
   */
  #abandon(channel: OutputChannel<unknown>, stop: AbortController, feeding: Promise<void>): void {
    stop.abort(new StateError("process() was left"));
    channel.close();
    const discard = (): undefined => undefined;
    this.#outputOverride = discard;
    this.#abandoned = feeding
      .then(() => this.waitEmpty())
      .catch(() => {}) // a reset or a lost cluster ends the wait: nothing is left to discard then
      .finally(() => {
        if (this.#outputOverride === discard) this.#outputOverride = undefined;
        this.#abandoned = undefined;
      });
  }

  /** Workers finish their current item, then pause; resolves once all have. */
  async sleep(): Promise<void> {
    this.#assertRunning("sleep");
    await Promise.all([...this.#lanes.keys()].map((client) => client.request("sleep", undefined, 10 * 60_000)));
  }

  /** Wakes the workers up again. */
  async wakeup(): Promise<void> {
    this.#assertRunning("wakeup");
    await Promise.all([...this.#lanes.keys()].map((client) => client.request("wakeup")));
  }

  /** Each node's status: its pipeline, cores, workers, idle workers, awake, start time, per-task counts. */
  async status(): Promise<NodeReport[]> {
    this.#assertOpen();
    this.#assertLocalRunning("ask the nodes' status");
    return Promise.all(
      [...this.#endpoints.values()].map(async (endpoint) => ({
        address: endpoint.key,
        ...(await this.#statusOf(endpoint)),
      })),
    );
  }

  /** Per task: processed, dropped, errors, total and mean time, merged over all workers of all nodes. */
  async stats(): Promise<TaskStats[]> {
    const reports = await this.status();
    return mergeTaskStats(reports.flatMap((report) => (report.pipeline ? [report.pipeline.tasks] : [])));
  }

  // ---- watching ----------------------------------------------------------------------------------

  /**
   * Serves a live dashboard of this cluster (progress, nodes, tasks, last errors) until `reset()` or
   * `close()`; it does not keep the process alive by itself.
   *
   * @example
   * const dashboard = cluster.serveDashboard({ port: 8787 });
   * console.log("dashboard at", dashboard.url);
   */
  serveDashboard(options: Omit<DashboardOptions, "keepAlive"> = {}): HttpEndpoint {
    this.#assertOpen();
    // Each node on its own: one that does not answer is shown so, beside the others.
    const ask = async (endpoint: Endpoint) => {
      try {
        return { address: endpoint.key, status: await this.#statusOf(endpoint) };
      } catch (error) {
        return { address: endpoint.key, error: (error as Error).message };
      }
    };
    const look = async () => {
      const nodes = await Promise.all([...this.#endpoints.values()].map(ask));
      return { nodes, root: this.observe() };
    };
    const { serveDashboard } = require("./dashboard/server.ts") as typeof import("./dashboard/server.ts");
    return this.#serve(serveDashboard(look, { ...options, keepAlive: false }));
  }

  /**
   * Serves this root's Prometheus metrics at `/metrics` (fed, done, resent, queued, in flight, each
   * node's window and round trip) until `reset()` or `close()`.
   *
   * @example
   * cluster.serveMetrics({ port: 9464 }); // scrape http://127.0.0.1:9464/metrics
   */
  serveMetrics(options: { port: number; host?: string }): HttpEndpoint {
    this.#assertOpen();
    const { serveRootMetrics } = require("./metrics.ts") as typeof import("./metrics.ts");
    return this.#serve(serveRootMetrics(() => this.observe(), { ...options, keepAlive: false }));
  }

  /** What the dashboard and the metrics show of this root: its counts, each node's lane, the last errors. */
  observe(): RootObservation {
    const known = (ms: number) => (Number.isFinite(ms) ? ms : null);
    return {
      progress: this.progress,
      nodes: this.#scheduler.lanes.map((lane) => ({
        address: lane.address,
        workers: lane.workers,
        idleWorkers: lane.idleWorkers,
        window: lane.window.size,
        inFlight: lane.inFlight,
        inFlightBytes: lane.inFlightBytes,
        roundTripMs: known(lane.window.lastLatencyMs),
        minRoundTripMs: known(lane.window.minLatencyMs),
      })),
      errors: this.#recentErrors.list(),
    };
  }

  #serve(endpoint: HttpEndpoint): HttpEndpoint {
    this.#served.add(endpoint);
    return {
      ...endpoint,
      stop: () => {
        this.#served.delete(endpoint);
        return endpoint.stop();
      },
    };
  }

  /** Stops the pipeline on every node and forgets what was queued; waits in progress reject. Nodes are free again. */
  async reset(): Promise<void> {
    if (this.#closed) return;
    await Promise.all([...this.#served].map((endpoint) => endpoint.stop()));
    this.#served.clear();
    await this.#stopPipeline("the cluster was reset");
    for (const client of this.#clients.values()) client.close();
    this.#clients.clear();
    const local = this.#local;
    this.#local = undefined;
    if (local !== undefined) this.#localStopped = true;
    await local?.stop();
    this.#forgetLocalLogDefault();
  }

  /** Resets, closes every connection and stops a local cluster; the root cannot be used again. */
  async close(): Promise<void> {
    await this.reset();
    this.#closed = true;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /**
   * The local cluster's log server is gone with it: `log()` goes back to stdout rather than to a dead
   * address (and a later `Root.local` sets its own), unless the program chose another address meanwhile.
   */
  #forgetLocalLogDefault(): void {
    const owned = this.#localLogDefault;
    this.#localLogDefault = undefined;
    const current = getDefaultLogAddress();
    if (owned === undefined || current?.[0] !== owned.address[0] || current[1] !== owned.address[1]) return;
    setDefaultLogAddress(undefined);
    if (owned.token) setLogToken(undefined);
  }

  // ---- nodes --------------------------------------------------------------------------------------

  /** The open connection to a node, or a new one (one at a time per node: concurrent callers share it). */
  #client(endpoint: Endpoint): Promise<NodeClient> {
    const existing = this.#clients.get(endpoint.key);
    if (existing?.isOpen) return Promise.resolve(existing);
    let connecting = this.#connecting.get(endpoint.key);
    if (connecting === undefined) {
      connecting = this.#connect(endpoint).finally(() => this.#connecting.delete(endpoint.key));
      this.#connecting.set(endpoint.key, connecting);
    }
    return connecting;
  }

  /**
   * A node's status. A node closes a connection that runs no pipeline of its own after it has been idle
   * a while (`pcluster node --idle-timeout`): a look that meets that close on its way is asked again on
   * a new connection, once.
   */
  async #statusOf(endpoint: Endpoint): Promise<NodeStatus> {
    const client = await this.#client(endpoint);
    try {
      return await client.request<NodeStatus>("status");
    } catch (error) {
      if (client.isOpen || this.#lanes.has(client)) throw error;
      return (await this.#client(endpoint)).request<NodeStatus>("status");
    }
  }

  async #connect(endpoint: Endpoint): Promise<NodeClient> {
    const client = await NodeClient.connect(endpoint, this.#options, this.#joined);
    this.#clients.set(endpoint.key, client);
    client.onResults = (blob, idle, standing, frameBytes) => {
      const lane = this.#lanes.get(client);
      if (lane !== undefined) this.#scheduler.reportIdle(lane, idle, standing);
      this.#results.push(client, blob, frameBytes);
    };
    client.onLost = (reason) => this.#onNodeLost(client, reason);
    client.onEvent = (name, data) => {
      if (name === "refused") return this.#onRefused(client, data);
      if (name === "draining") return this.#onDraining(client, data);
      if (name === "reset" && this.#lanes.has(client)) {
        client.close();
        this.#onNodeLost(
          client,
          new StateError(
            `node ${client.address} reset the pipeline: ${(data as { why?: string })?.why ?? "no reason given"}`,
          ),
        );
      }
    };
    return client;
  }

  async #setupNode(
    endpoint: Endpoint,
    args: SetupArgs,
    options: SetupOptions,
  ): Promise<{ client: NodeClient; result: SetupResult }> {
    const client = await this.#client(endpoint);
    if (args.maxItemBytes !== undefined) client.allowItems(args.maxItemBytes);
    const result = await client.request<SetupResult>("setup", args, options.setupTimeoutMs ?? 15 * 60_000);
    return { client, result };
  }

  /** A node is stopping (SIGTERM): it gets no more items, and finishes those it has (see `drain` on the node). */
  #onDraining(client: NodeClient, data: unknown): void {
    const lane = this.#lanes.get(client);
    if (lane === undefined) return;
    lane.draining = true;
    const { timeoutMs } = (data ?? {}) as { timeoutMs?: unknown };
    const within = typeof timeoutMs === "number" ? ` within ${timeoutMs / 1000} s` : "";
    this.#note(
      "info",
      `node ${client.address} is stopping: it gets no more items, and finishes its ${lane.inFlight} items in flight${within} (what is left then goes to the other nodes)`,
    );
  }

  /** A node refused a feed (it would have gone past its grant): those items are queued again, first. */
  #onRefused(client: NodeClient, data: unknown): void {
    const lane = this.#lanes.get(client);
    const { ids, reason } = (data ?? {}) as { ids?: unknown; reason?: unknown };
    if (lane === undefined || !(ids instanceof Uint8Array) || ids.length % 4 !== 0) return;
    const view = new DataView(ids.buffer, ids.byteOffset, ids.byteLength);
    const list: number[] = [];
    for (let at = 0; at < ids.length; at += 4) list.push(view.getUint32(at, true));
    const requeued = this.#scheduler.takeBack(lane, list);
    this.#note("warn", `node ${client.address} refused ${requeued} items (${String(reason)}); they are queued again`);
  }

  /**
   * A node is gone: its unfinished items go to the others, and it leaves this root's nodes (so that the
   * next `setup` does not fail on it; `addNode` brings it back). With none left, everything waiting fails.
   */
  #onNodeLost(client: NodeClient, reason: PclusterError): void {
    this.#clients.delete(client.address);
    const lane = this.#lanes.get(client);
    if (lane === undefined) return;
    this.#lanes.delete(client);
    const endpoint = this.#endpoints.get(client.address);
    this.#endpoints.delete(client.address);
    // Items whose Done waits behind the output handler are finished: their outputs are still handed out.
    const maxAttempts = this.#setupOptions.maxAttempts ?? 3;
    const { requeued, finished, givenUp } = this.#scheduler.removeLane(
      lane,
      this.#results.pendingDone(client),
      maxAttempts,
    );
    this.#results.endOf(client); // what it left held (items sent again) is dropped after its last frame
    this.#progress.resent += requeued;
    this.#progress.done += finished + givenUp.length;
    const left = this.#scheduler.lanes.length;
    const rejoinMs = this.#options.rejoinTimeoutMs ?? DEFAULT_REJOIN_MS;
    const afterwards =
      rejoinMs > 0 && endpoint !== undefined
        ? `; it is set up again if it comes back within ${rejoinMs} ms`
        : "; it is dropped from this root's nodes (addNode() brings it back)";
    if (lane.draining && requeued === 0 && givenUp.length === 0) {
      this.#note("info", `node ${client.address} left, its items finished (${reason.message})${afterwards}`);
    } else {
      this.#note(
        "warn",
        `node ${client.address} lost (${reason.message}); re-sending ${requeued} unfinished items to the ${left} other node${left === 1 ? "" : "s"}` +
          (givenUp.length > 0 ? `; ${givenUp.length} given up` : "") +
          afterwards,
      );
    }
    for (const item of givenUp) this.#giveUp(item, client.address);
    if (endpoint !== undefined && rejoinMs > 0 && this.#running && this.#pipeline !== undefined) {
      const { promise: tried, resolve: triedOnce } = Promise.withResolvers<void>();
      this.#firstTries.add(tried);
      void tried.then(() => this.#firstTries.delete(tried));
      this.#rejoining.add(endpoint.key);
      void this.#join(endpoint, this.#pipeline, rejoinMs, triedOnce).finally(() =>
        this.#rejoining.delete(endpoint.key),
      );
    }
    if (left === 0 && this.#running) {
      const fail = () => {
        this.#noNodesTimer = undefined;
        if (!this.#running || this.#scheduler.lanes.length > 0) return;
        this.#failure = new NoNodesError(
          `every node is lost (the last, ${client.address}: ${reason.message}); ${this.#scheduler.queued} items are not finished. ` +
            "Add nodes and call setup() again",
        );
        this.#settle();
      };
      // A local cluster restarts its nodes: wait for one to come back before giving up on the run.
      if (this.#local !== undefined && rejoinMs > 0) {
        clearTimeout(this.#noNodesTimer);
        this.#noNodesTimer = setTimeout(fail, rejoinMs);
      } else if (this.#firstTries.size > 0) {
        // Nodes that took this root for gone while it was stopped are up and free: give up on the run
        // only once each lost node has been tried again (a node that is down refuses at once).
        void Promise.all(this.#firstTries).then(fail);
      } else fail();
    }
    this.#settle();
  }

  /** An item that was on `maxAttempts` nodes that died is given up: reported like a worker crash. */
  #giveUp(item: Resend, address: string): void {
    this.#progress.errors++;
    const input = decodeInput(item.bytes);
    const what = input === undefined ? `${item.bytes.length} bytes` : preview(input);
    const error = new TaskError(
      `an item could not finish: it was in flight on ${item.lost} nodes that died (the last, ${address}); given up: ${what}`,
      { task: "?", failed: true, node: address, input },
    );
    const handler = this.#setupOptions.errorHandler;
    if (handler !== undefined) void callHandler("errorHandler", handler, error);
    else diagnostics().warn(`pcluster: ${error.message}`);
  }

  /**
   * Sets a node up with the running pipeline and gives it work: a node added during a run, or one that
   * was lost and may come back (retried with backoff for `retryMs`; 0: one try). Gives up quietly when
   * the pipeline changes meanwhile.
   */
  async #join(endpoint: Endpoint, pipeline: RunningPipeline, retryMs: number, triedOnce?: () => void): Promise<void> {
    const deadline = Date.now() + retryMs;
    try {
      const wanted = () => this.#pipeline === pipeline && this.#running && !this.#removed.has(endpoint.key);
      for (let delay = 100; ; delay = Math.min(delay * 2, 2000)) {
        if (!wanted() || this.#closed) return;
        try {
          const { client, result } = await this.#setupNode(endpoint, pipeline.args, pipeline.options);
          if (!wanted()) {
            await client.request("reset", undefined, 10_000).catch(() => {});
            return;
          }
          this.#endpoints.set(endpoint.key, endpoint);
          this.#addLane(client, result);
          this.#note(
            "info",
            `node ${endpoint.key} joined "${pipeline.args.name}" ${pipeline.args.version} (${result.workers} workers)`,
          );
          this.#settle();
          return;
        } catch (error) {
          if (Date.now() + delay > deadline) {
            if (retryMs === 0)
              this.#note("warn", `node ${endpoint.key} could not join the run: ${(error as Error).message}`);
            return;
          }
        }
        triedOnce?.();
        await new Promise<void>((resolve) => setTimeout(resolve, delay).unref());
      }
    } finally {
      triedOnce?.();
    }
  }

  #addLane(client: NodeClient, result: SetupResult): void {
    clearTimeout(this.#noNodesTimer);
    this.#noNodesTimer = undefined;
    const args = this.#pipeline?.args;
    const perTask = args?.taskchain.map((task) => task.concurrency ?? 1) ?? [];
    const concurrency = Math.max(args?.concurrency ?? 1, ...perTask);
    this.#lanes.set(client, this.#scheduler.addLane(client, result.workers, result.window, concurrency));
    const nodeLimit = typeof result.maxItemBytes === "number" ? result.maxItemBytes : Number.POSITIVE_INFINITY;
    if (nodeLimit < this.#scheduler.maxItemBytes) {
      // A node joining a run with a smaller limit: items queued before were checked against the larger one.
      if (this.#scheduler.queued > 0)
        this.#note(
          "warn",
          `node ${client.address} takes items of up to ${nodeLimit} bytes: later feeds are held to that`,
        );
      this.#scheduler.maxItemBytes = nodeLimit;
    }
    client.startHeartbeat();
  }

  /** Resets the pipeline on the nodes that run it and forgets all work; pending waits reject. */
  async #stopPipeline(why: string): Promise<void> {
    const clients = [...this.#lanes.keys()];
    this.#running = false;
    this.#pipeline = undefined;
    clearTimeout(this.#noNodesTimer);
    this.#noNodesTimer = undefined;
    runningRoots.delete(this);
    this.#lanes.clear();
    this.#scheduler.clear();
    this.#results.clear();
    this.#waits.rejectAll(new StateError(`${why}; the wait was abandoned`));
    await Promise.all(clients.map((client) => client.request("reset", undefined, 10_000).catch(() => {})));
    this.#updateKeepAlive();
  }

  // ---- results ------------------------------------------------------------------------------------

  #onOutput(value: unknown, bytes: number): unknown {
    this.#progress.outputs++;
    if (this.#outputOverride !== undefined) return this.#outputOverride(value, bytes);
    const handler = this.#setupOptions.outputHandler;
    return handler === undefined ? undefined : callHandler("outputHandler", handler, value);
  }

  #onTaskError(client: NodeClient, item: number, report: TaskErrorReport, failed: boolean): unknown {
    this.#progress.errors++;
    const lane = this.#lanes.get(client);
    const bytes = lane === undefined ? undefined : this.#scheduler.inputOf(lane, item);
    const input = bytes === undefined ? undefined : decodeInput(bytes);
    // The item is named by its input (the root's id of it follows the order items were sent in).
    const which = bytes === undefined ? `item ${item}` : `item ${item} (input: ${preview(input)})`;
    const error = new TaskError(
      `task "${report.task}" ${failed ? "could not finish" : "failed on"} ${which} on node ${client.address}: ${report.message}`,
      { task: report.task, stack: report.stack, failed, node: client.address, item, input },
    );
    this.#recentErrors.add({ task: report.task, item, message: report.message, failed, node: client.address });
    const handler = this.#setupOptions.errorHandler;
    if (handler !== undefined) return callHandler("errorHandler", handler, error);
    if (this.#unhandledErrors++ < MAX_UNHANDLED_ERROR_NOTES) {
      diagnostics().warn(
        `pcluster: ${error.message}${this.#unhandledErrors === MAX_UNHANDLED_ERROR_NOTES ? " (further task errors are not printed; pass an errorHandler to see them all)" : ""}`,
      );
    }
    return undefined;
  }

  #onPartial(client: NodeClient, bytes: Uint8Array, start: number, end: number): unknown {
    try {
      // Outputs folded count as outputs once, when the partial that holds them arrives.
      if (this.#total !== undefined) this.#progress.outputs += this.#total.merge(bytes, start, end);
      return undefined;
    } catch (error) {
      const report = {
        task: "(combiner)",
        message: `merging a partial on the root failed: ${(error as Error).message}`,
      };
      return this.#onTaskError(client, 0, report, false);
    }
  }

  /**
   * With setup's `combine`: the total of every output so far, merged from the workers' partials (of
   * items done; after `waitEmpty()` or `run()`, of all). Each partial counts once, whatever died.
   */
  result<Result = Total>(): Result {
    if (this.#total === undefined) {
      throw new StateError('result() needs a combiner: pass setup\'s combine option (e.g. combine: "sum-by-key")');
    }
    return this.#total.result() as Result;
  }

  #onDone(client: NodeClient, ids: number[]): void {
    const lane = this.#lanes.get(client);
    if (lane === undefined) return; // a lost node: its items were re-queued already
    this.#progress.done += this.#scheduler.completeAll(lane, ids);
  }

  // ---- waiting ------------------------------------------------------------------------------------

  /** Resolves once `ready()` holds; rejects if the cluster fails, or with `signal`'s reason if it aborts first. */
  #when(ready: () => boolean, signal?: AbortSignal): Promise<void> {
    try {
      this.#assertRunning("wait");
      signal?.throwIfAborted();
    } catch (error) {
      return Promise.reject(error);
    }
    if (ready()) return Promise.resolve();
    const promise = this.#waits.until(ready, signal);
    if (signal !== undefined) promise.catch(() => this.#updateKeepAlive()); // an aborted wait is gone
    this.#updateKeepAlive();
    return promise;
  }

  /** Whether the queue holds fewer items and bytes than `bound` (checked per item: no closure, no promise). */
  #hasRoom(bound: { items: number; bytes: number }): boolean {
    return this.#scheduler.queued < bound.items && this.#scheduler.queuedBytes < bound.bytes;
  }

  /** Resolves once the queue holds fewer items and bytes than `bound`. */
  #room(bound: { items: number; bytes: number }, signal?: AbortSignal): Promise<void> {
    return this.#when(() => this.#hasRoom(bound), signal);
  }

  /**
   * About how many more items fit below `bytes` in the queue, judged by the size of those it holds (at
   * least one: an item larger than the bound goes alone), for `feedAsync`, whose items are at hand.
   */
  #itemsForBytes(bytes: number): number {
    if (bytes === Number.POSITIVE_INFINITY) return Number.POSITIVE_INFINITY;
    const perItem = this.#itemBytesNow();
    if (perItem === undefined) return FIRST_CHUNK_ITEMS; // their sizes tell
    return Math.max(1, Math.floor((bytes - this.#scheduler.queuedBytes) / Math.max(1, perItem)));
  }

  /** Bytes an item in the queue takes on average: of those queued now, else of those last seen. */
  #itemBytesNow(): number | undefined {
    const { queued, queuedBytes } = this.#scheduler;
    if (queued > 0) this.#itemBytes = queuedBytes / queued;
    return this.#itemBytes;
  }

  #defaultBound(): number {
    let window = 0;
    for (const lane of this.#scheduler.lanes) window += lane.window.size;
    return Math.max(1024, window * 2);
  }

  /** See RootOptions.maxQueuedBytes: twice what the nodes may have in flight, 64 MiB at least. */
  #defaultBytesBound(): number {
    let inFlight = 0;
    for (const lane of this.#scheduler.lanes) inFlight += lane.maxInFlightBytes;
    return Math.max(DEFAULT_MIN_QUEUED_BYTES, inFlight * 2);
  }

  /** Wakes every waiter whose condition holds now (or fails them all if the cluster failed). */
  #settle(): void {
    if (this.#failure !== undefined) return this.#waits.rejectAll(this.#failure);
    this.#waits.settle();
    this.#updateKeepAlive();
  }

  /**
   * Keeps the process alive exactly while there is work or a wait: a script that forgets `reset()`
   * still exits when it is done, and its nodes free themselves when the connection drops.
   */
  #updateKeepAlive(): void {
    const active =
      this.#waits.size > 0 || this.#scheduler.queued > 0 || this.#scheduler.inFlight > 0 || !this.#results.idle;
    for (const client of this.#clients.values()) client.keepAlive(active);
  }

  /** A `Root.local` whose nodes `reset()` stopped has nothing to ask: say so, not "could not connect". */
  #assertLocalRunning(what: string): void {
    if (!this.#localStopped) return;
    throw new StateError(
      `cannot ${what}: reset() stopped this root's local cluster; start another with Root.local(), or call setup() again without reset() to replace a pipeline`,
    );
  }

  #assertOpen(): void {
    if (this.#closed) throw new StateError("this root is closed; create a new one");
  }

  #assertRunning(what: string): void {
    this.#assertOpen();
    if (this.#failure !== undefined) throw this.#failure;
    if (!this.#running) throw new StateError(`cannot ${what}: call setup() first`);
  }

  /** To the console and the log. */
  #note(level: "info" | "warn", message: string): void {
    diagnostics()[level](`[root] ${message}`);
    if (getDefaultLogAddress() !== undefined) log[level](`[root] ${message}`);
  }
}

/** The default bound on held outputs: 64 MiB, or room for one output of `maxItemBytes` and 16 MiB more. */
function heldBytesFor(maxItemBytes: number): number {
  return Math.max(DEFAULT_MAX_HELD_BYTES, maxItemBytes + 16 * 1024 * 1024);
}

/** A value on one line of at most 80 characters, for a message that names an item by its input. */
function preview(value: unknown): string {
  const text = Bun.inspect(value, { depth: 2 }).replace(/\s*\n\s*/g, " ");
  return text.length <= 80 ? text : `${text.slice(0, 79)}…`;
}

/** An input item as it was fed, decoded from its bytes (undefined if they cannot be: never for ours). */
function decodeInput(bytes: Uint8Array): unknown {
  try {
    return decode(bytes);
  } catch {
    return undefined;
  }
}

/** Roots with a pipeline set up, reset when the program ends normally (see `freeAtExit`). */
const runningRoots = new Set<Root>();
let exitHookInstalled = false;

/**
 * A program that ends without `reset()` frees its nodes at once: when its event loop runs dry, each
 * root still running resets its nodes (a crash leaves them to the nodes' own grace after the disconnect).
 */
function freeAtExit(root: Root): void {
  runningRoots.add(root);
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("beforeExit", () => {
    const roots = [...runningRoots];
    runningRoots.clear();
    for (const running of roots) void running.reset().catch(() => {});
  });
}

/**
 * Runs a user handler on one value (no closure: this runs once per output). What it throws, or a
 * promise it returns rejects with, is printed and never stops the results; a promise it returns holds
 * the next results until it settles.
 */
/**
 * About how many bytes `value` takes encoded, at a glance: a string's length, a byte array's, and for an
 * array or a plain object those of its members one level down. It misses what lies deeper; it serves
 * only to take the first items of a run before the size of any is known (see `#feedAll`).
 */
function roughBytes(value: unknown): number {
  const own = (member: unknown): number =>
    typeof member === "string" ? member.length : ArrayBuffer.isView(member) ? member.byteLength : 8;
  if (typeof value !== "object" || value === null || ArrayBuffer.isView(value)) return own(value);
  let bytes = 0;
  for (const member of Array.isArray(value) ? value : Object.values(value)) bytes += own(member);
  return bytes;
}

function callHandler<T>(name: string, handler: (value: T) => unknown, value: T): unknown {
  try {
    const result = handler(value);
    return isThenable(result)
      ? Promise.resolve(result).then(undefined, (error: unknown) => reportHandlerError(name, error))
      : result;
  } catch (error) {
    reportHandlerError(name, error);
    return undefined;
  }
}

function reportHandlerError(name: string, error: unknown): void {
  diagnostics().error(
    `pcluster: the ${name} threw: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`,
  );
}

/**
 * The progress bar of `run()` and `process()`, loaded at the first run that asks for one. What only some
 * programs use — the progress bar, the dashboard, metrics, discovery, the local cluster — is loaded
 * when first used: a task that imports `log` from "pcluster" loads the root's module graph in every
 * worker thread, and those parts made it a sixth larger (42 ms of CPU a worker, 36 without them).
 */
function progressDisplay(...args: Parameters<typeof import("./progress-bar.ts").showProgress>): Disposable | undefined {
  if (args[0] === undefined || args[0] === false) return undefined;
  const { showProgress } = require("./progress-bar.ts") as typeof import("./progress-bar.ts");
  return showProgress(...args);
}
