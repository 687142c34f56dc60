import { RecordBatchBuilder } from "../protocol/codec.ts";
import { RECORD_HEADER_BYTES, RecordKind } from "../protocol/record.ts";
import { FeedQueue } from "./feed-queue.ts";
import { Ledger, type LedgerEntry } from "./ledger.ts";
import type { SchedulerOptions } from "./options.ts";
import { AdaptiveWindow } from "./window.ts";

/**
 * Queued items from which `enqueue` pumps at once instead of at the end of the turn: a program that
 * feeds a flood in one go (encoding as it feeds) keeps the nodes busy meanwhile.
 */
const PUMP_NOW_ITEMS = 1024;

/** Batches of at most this many items are built in a small buffer. */
const SMALL_BATCH_ITEMS = 32;

/**
 * The feed's linger (Kafka's `linger.ms`): a batch that the window's room cuts below the window's batch
 * size, for a node that still has half its window in flight, waits up to this long for room for a
 * whole batch. (A batch cut short by the queue goes at once: only a feeder could make it larger.) That
 * node has work for longer than this (the window covers twice a round trip), so the wait costs it
 * nothing, and slow items no longer travel, and wake the node, one frame each. A node with little in
 * flight (a trickle, a start) gets what there is at once.
 *
 * The wait is a quarter of the node's fastest round trip, within [FEED_LINGER_MS, MAX_FEED_LINGER_MS]:
 * half its window in flight is work for a whole round trip, and slow items free room a few at a time,
 * so with a fixed 2 ms every frame to a node of 2 ms items held a few (each a write here and a wake there).
 * Only a node that said last that none of its workers is idle waits: while the window still grows (its
 * items are on the wire, not queued at the node), a wait would leave its workers idle.
 */
const FEED_LINGER_MS = 2;
const MAX_FEED_LINGER_MS = 10;

/**
 * While the items waiting fit in the room the lanes have, each lane gets its share of them (in
 * proportion to its workers, counting what it has in flight), not a whole batch in turn: three items of
 * 5 s fed to 2 nodes of 2 workers went to one node, one behind the others, while the other idled (10 s
 * where 5 s do), and 10 to 3 nodes of 4 workers took two rounds where one does. Lanes whose items came
 * back faster than this (round trip, task included) still get whole batches: there a frame more per
 * node costs more than what an item waits.
 */
const SPREAD_ROUND_TRIP_MS = 20;

/** What the scheduler needs of a node: somewhere to send finished feed frames. */
export interface FeedTarget {
  readonly address: string;
  /**
   * Sends one feed frame, given as pieces to write back to back (the first holds the frame's header).
   * Their bytes stay unchanged until written: the target must not keep them past that.
   */
  sendFeed(pieces: readonly Uint8Array[]): void;
}

export type { SchedulerOptions };

/** An item sent again: its bytes, and on how many nodes that died it was in flight. */
export interface Resend {
  bytes: Uint8Array;
  lost: number;
}

/** What `removeLane` did with a lost node's items. */
export interface LaneRemoval {
  /** Items queued again. */
  requeued: number;
  /** Items whose Done had arrived (not handled yet): finished, not re-sent. */
  finished: number;
  /** Items given up: on `maxAttempts` nodes that died (see `Scheduler`'s quarantine). */
  givenUp: Resend[];
}

/**
 * One node as the scheduler sees it: its window, and its ledger — every item sent to it and not yet
 * done, by id, with where its encoded bytes are (a record in the feed queue, by reference, or bytes of
 * its own for an item re-sent), so that it can be sent elsewhere if the node is lost.
 */
export class NodeLane {
  readonly ledger = new Ledger();
  inFlightBytes = 0;
  /** Idle workers the node reported last. */
  idleWorkers: number;
  /** Items (by id) whose round trip is being timed, with when they left. */
  readonly samples = new Map<number, number>();
  /** Since when a partial batch for this node lingers (NaN: none does). */
  lingeringSince = Number.NaN;
  /** The node is stopping (it said so): it finishes its items, and gets no more. */
  draining = false;

  constructor(
    readonly target: FeedTarget,
    readonly workers: number,
    readonly window: AdaptiveWindow,
    readonly maxInFlightBytes: number,
  ) {
    this.idleWorkers = workers;
  }

  get inFlight(): number {
    return this.ledger.size;
  }

  get address(): string {
    return this.target.address;
  }
}

/**
 * The root's scheduler: a queue of encoded items, and one lane per node. `pump` hands out batches
 * round-robin to every lane with room in its window, as long as items wait; a lane's room comes back
 * as its items are done. A faster node finishes sooner, so it gets more; a stalled node gets nothing
 * more; items fed in one turn leave together at the end of that turn, so a trickle goes out at once
 * and a flood goes out in large frames.
 */
export class Scheduler {
  readonly #maxBatch: number;
  readonly #maxBatchBytes: number;
  readonly #fixedWindow: number | undefined;
  readonly #staleChunkMs: number;
  #staleCheckedAt = 0;
  /** Items re-sent after a node was lost go first (taken from the end); then fresh items, oldest first. */
  #retry: Resend[] = [];
  #retryBytes = 0;
  /**
   * Items that were on two or more nodes that died: each is tried alone, one at a time, on a node
   * with nothing else in flight, so that a node dying then is sure evidence against that item.
   */
  #quarantine: Resend[] = [];
  /** The quarantined item in flight (one at most, cluster-wide). */
  #isolated: { lane: NodeLane; id: number } | undefined;
  /** For items in flight that were on a node that died before: on how many (by id; few). */
  readonly #lost = new Map<number, number>();
  readonly #fresh: FeedQueue;
  #lanes: NodeLane[] = [];
  #next = 0;
  #nextId = 1;
  #pumpScheduled = false;
  #pumping = false;
  #lingerTimer: ReturnType<typeof setTimeout> | undefined;
  readonly #batch = new RecordBatchBuilder(64 * 1024);
  /**
   * For batches of a few items: a builder starts a fresh buffer of its initial size after every frame,
   * and allocating 64 KiB per frame was ~80% of the ~10 µs a frame of one item cost (bench/scheduler.bench.ts).
   */
  readonly #smallBatch = new RecordBatchBuilder(4 * 1024);
  /** Called after each pump (room may have changed for feeders waiting on a bounded queue). */
  onPumped: () => void = () => {};

  constructor(options: SchedulerOptions = {}) {
    this.#maxBatch = Math.max(1, options.maxBatch ?? 4096);
    this.#maxBatchBytes = options.maxBatchBytes ?? 1024 * 1024;
    this.#fixedWindow = options.fixedWindow;
    this.#staleChunkMs = options.staleChunkMs ?? 1000;
    this.#fresh = new FeedQueue(options.clock);
  }

  /**
   * Adds a node that can take `grant.items` items and `grant.bytes` bytes in flight, whose workers each
   * run `concurrency` items at once.
   */
  addLane(target: FeedTarget, workers: number, grant: { items: number; bytes: number }, concurrency = 1): NodeLane {
    const floor = Math.max(4, workers * concurrency * 2);
    const window =
      this.#fixedWindow === undefined
        ? new AdaptiveWindow(floor, Math.max(floor, grant.items))
        : new AdaptiveWindow(this.#fixedWindow, this.#fixedWindow, this.#fixedWindow);
    const lane = new NodeLane(target, workers, window, grant.bytes);
    this.#lanes.push(lane);
    this.schedulePump();
    return lane;
  }

  /**
   * Takes a node out. Its unfinished items go to the front of the queue; those in `alreadyDone` (whose
   * Done arrived but was not handled yet) are finished instead.
   *
   * Poison items: an item in flight on a node that died counts that node. One that was on two goes to
   * quarantine (tried alone); one that dies alone `maxAttempts - 1` times more is given up. An item
   * that only shared a dying node with others is never given up for it: it cannot be told from the
   * item that took the node down. With `maxAttempts` 1, every item of a node that died is given up.
   */
  removeLane(lane: NodeLane, alreadyDone: Iterable<number> = [], maxAttempts = Number.POSITIVE_INFINITY): LaneRemoval {
    const index = this.#lanes.indexOf(lane);
    if (index < 0) return { requeued: 0, finished: 0, givenUp: [] };
    this.#lanes.splice(index, 1);
    let finished = 0;
    for (const id of alreadyDone) {
      const entry = lane.ledger.take(id);
      if (entry === undefined) continue;
      this.#release(entry);
      this.#lost.delete(id);
      finished++;
    }
    const isolated = this.#isolated?.lane === lane ? this.#isolated.id : -1;
    if (isolated >= 0) this.#isolated = undefined;
    const requeued: Resend[] = [];
    const givenUp: Resend[] = [];
    let quarantined = 0;
    // Oldest first, as they were sent.
    const entries = [...lane.ledger.entries()].sort((a, b) => a[0] - b[0]);
    for (const [id, entry] of entries) {
      const bytes = typeof entry === "number" ? this.#fresh.takeBack(entry) : entry;
      const before = this.#lost.get(id) ?? 0;
      this.#lost.delete(id);
      const lost = id === isolated ? before + 1 : Math.min(before + 1, Math.max(1, maxAttempts - 1));
      const resend = { bytes, lost };
      if (lost >= maxAttempts) givenUp.push(resend);
      else if (lost >= 2) {
        this.#quarantine.push(resend);
        quarantined++;
      } else requeued.push(resend);
    }
    for (const resend of requeued) this.#retryBytes += resend.bytes.length;
    this.#retry = requeued.reverse().concat(this.#retry); // taken from the end: the oldest goes first
    lane.ledger.clear();
    lane.inFlightBytes = 0;
    lane.samples.clear();
    this.schedulePump();
    return { requeued: requeued.length + quarantined, finished, givenUp };
  }

  /**
   * Items `ids` that `lane` refused go back to the front of the queue, as if never sent. Returns how
   * many were in flight there.
   */
  takeBack(lane: NodeLane, ids: readonly number[]): number {
    let count = 0;
    for (let i = ids.length - 1; i >= 0; i--) {
      const id = ids[i]!;
      const entry = lane.ledger.take(id);
      if (entry === undefined) continue;
      const bytes = typeof entry === "number" ? this.#fresh.takeBack(entry) : entry;
      lane.inFlightBytes -= RECORD_HEADER_BYTES + bytes.length;
      lane.samples.delete(id);
      const lost = this.#lost.get(id) ?? 0;
      this.#lost.delete(id);
      if (this.#isolated?.id === id) {
        this.#isolated = undefined;
        this.#quarantine.unshift({ bytes, lost });
        continue;
      }
      this.#retry.push({ bytes, lost }); // the retry queue is taken from its end: these go first, in order
      this.#retryBytes += bytes.length;
      count++;
    }
    this.schedulePump();
    return count;
  }

  /** The encoded item `id` in flight on `lane` (a view, to read at once), or undefined. */
  inputOf(lane: NodeLane, id: number): Uint8Array | undefined {
    const entry = lane.ledger.get(id);
    if (entry === undefined) return undefined;
    return typeof entry === "number" ? this.#fresh.payloadOf(entry) : entry;
  }

  get lanes(): readonly NodeLane[] {
    return this.#lanes;
  }

  /** The largest item, encoded, that `enqueue` and `enqueueValues` take (`ItemTooLargeError` beyond it). */
  get maxItemBytes(): number {
    return this.#fresh.maxItemBytes;
  }

  set maxItemBytes(bytes: number) {
    this.#fresh.maxItemBytes = bytes;
  }

  /** Queues encoded items (copied into the queue). */
  enqueue(items: readonly Uint8Array[]): void {
    this.#fresh.appendBytes(items);
    this.#afterEnqueue();
  }

  /**
   * Encodes and queues items. A value that cannot be carried as itself throws an `ItemEncodeError`
   * naming its index (counted from `firstIndex`) and path, one over `maxItemBytes` an
   * `ItemTooLargeError`, and then none of `values` is queued.
   */
  enqueueValues(values: readonly unknown[], firstIndex = 0): void {
    this.#fresh.appendValues(values, firstIndex);
    this.#afterEnqueue();
  }

  #afterEnqueue(): void {
    if (this.queued >= PUMP_NOW_ITEMS && !this.#pumping) this.pump();
    else this.schedulePump();
  }

  /** Items waiting at the root. */
  get queued(): number {
    return this.#retry.length + this.#quarantine.length + this.#fresh.length;
  }

  /** Feed chunks held: with items waiting or in flight (for tests and status). */
  get feedChunks(): number {
    return this.#fresh.liveChunks;
  }

  get queuedBytes(): number {
    return this.#retryBytes + this.#fresh.bytes;
  }

  /** Items sent and not yet done, on all nodes. */
  get inFlight(): number {
    let items = 0;
    for (const lane of this.#lanes) items += lane.ledger.size;
    return items;
  }

  /** An item is done on `lane`; returns false when it was not in flight there (a late duplicate). */
  complete(lane: NodeLane, id: number, now?: number): boolean {
    const entry = lane.ledger.take(id);
    if (entry === undefined) return false;
    lane.inFlightBytes -= RECORD_HEADER_BYTES + this.#release(entry);
    if (this.#lost.size > 0 && this.#lost.delete(id) && this.#isolated?.id === id) this.#isolated = undefined;
    if (lane.samples.size > 0) {
      const sent = lane.samples.get(id);
      if (sent !== undefined) {
        lane.samples.delete(id);
        lane.window.sample((now ?? performance.now()) - sent, lane.idleWorkers); // the clock only for timed items
      }
    }
    this.schedulePump();
    return true;
  }

  /**
   * Items `ids` are done on `lane` (one Done record's worth); returns how many were in flight there.
   * The window learns the node's rate from these, once per batch, not per item.
   */
  completeAll(lane: NodeLane, ids: readonly number[]): number {
    const now = performance.now();
    let completed = 0;
    for (const id of ids) if (this.complete(lane, id, now)) completed++;
    if (completed > 0) lane.window.delivered(completed, now);
    return completed;
  }

  /**
   * The node says how many of its workers are idle now, and whether items stood waiting in it beyond
   * its workers' queues since its last report (`standing`: its window may shrink, see AdaptiveWindow).
   * Idle workers while items wait here for want of room in its window make the window grow: want of room
   * is less room than a whole batch, not only none, since a partial batch lingers for room (#linger) —
   * with "none" alone, a lingering lane never filled its window, so it never grew past its start
   * (bench/scheduler.bench.ts: 7 items a frame, not 4 000).
   */
  reportIdle(lane: NodeLane, idleWorkers: number, standing = false): void {
    lane.window.backlog(standing);
    lane.idleWorkers = idleWorkers;
    if (idleWorkers === 0 || this.queued === 0) return;
    const room = lane.window.size - lane.inFlight;
    if (room < lane.window.batchSize(this.#maxBatch)) lane.window.starved();
  }

  /** Pumps at the end of this turn (once, however many calls). */
  schedulePump(): void {
    if (this.#pumpScheduled) return;
    this.#pumpScheduled = true;
    queueMicrotask(this.pump);
  }

  /** Hands out batches, round-robin, while items wait and some lane has room. */
  readonly pump = (): void => {
    this.#pumpScheduled = false;
    this.#pumping = true;
    const lanes = this.#lanes;
    let idleRounds = 0;
    let spread = this.#spreadNow();
    while (this.queued > 0 && lanes.length > 0) {
      if (idleRounds >= lanes.length) {
        if (spread === undefined) break;
        spread = undefined; // every lane took its share and some still wait: batches, as with many
        idleRounds = 0;
      }
      const lane = lanes[this.#next++ % lanes.length]!;
      if (this.#sendBatch(lane, spread) === 0) idleRounds++;
      else idleRounds = 0;
    }
    this.#pumping = false;
    this.#releaseStaleChunks();
    this.onPumped();
  };

  /**
   * Sends one batch to `lane` if its window and byte grant allow; returns how many items went. Bytes
   * are counted as the node counts them (whole records, headers included), and a batch never takes the
   * lane past its grant: an item that does not fit waits for room — unless the node has fewer items
   * than workers, when it goes in a batch of its own (items of megabytes: the grant may hold one or
   * none, and every worker should still have one).
   */
  #sendBatch(lane: NodeLane, spread: Spread | undefined): number {
    if (this.#isolated?.lane === lane) return 0; // a quarantined item runs there alone
    if (this.#quarantine.length > 0 && this.#isolated === undefined && lane.ledger.size === 0 && !lane.draining)
      return this.#isolate(lane);
    const room = lane.window.size - lane.ledger.size;
    if (room <= 0 || lane.draining) return 0;
    // A worker may be without an item there: the first item of this batch may go past the byte grant.
    const starving = lane.ledger.size < lane.workers;
    const budget = lane.maxInFlightBytes - lane.inFlightBytes;
    const batchSize = lane.window.batchSize(this.#maxBatch);
    // Room for less than two batches goes in one frame while more items wait than every lane has room
    // for: slow items free room a results frame at a time, and a batch and the rest (which lingered for
    // room) were two writes here and two wake-ups there per results frame. Larger room still goes a batch
    // a frame (a node starts on the first while the next is on its way: one frame of all the room cost
    // identity items 5–9% of their rate), and with fewer items waiting, a batch a turn, so that a few
    // items spread over the nodes.
    const whole = room < 2 * batchSize && this.queued >= room * this.#lanes.length;
    const share = shareOf(lane, spread);
    if (share <= 0) return 0;
    const count = Math.min(whole ? room : batchSize, this.#maxBatch, this.queued, share);
    // Only the window's room limits this batch (more items wait): wait a little for room for a whole one.
    const busy = lane.idleWorkers === 0 && lane.ledger.size * 2 >= lane.window.size;
    if (busy && room < batchSize && this.queued > room && this.#linger(lane)) return 0;
    const batch = count <= SMALL_BATCH_ITEMS ? this.#smallBatch : this.#batch;
    let bytes = 0;
    let firstId = -1;
    let retryHeld = false;
    while (batch.count < count && this.#retry.length > 0) {
      const resend = this.#retry[this.#retry.length - 1]!;
      const item = resend.bytes;
      const size = RECORD_HEADER_BYTES + item.length;
      const fits =
        batch.count === 0 ? size <= budget || starving : bytes < this.#maxBatchBytes && bytes + size <= budget;
      if (!fits) {
        retryHeld = true;
        break;
      }
      this.#retry.pop();
      const id = this.#takeId();
      batch.append(RecordKind.Input, 0, 0, id, item);
      lane.ledger.add(id, item);
      this.#lost.set(id, resend.lost);
      this.#retryBytes -= item.length;
      bytes += size;
      if (firstId < 0) firstId = id;
    }
    if (!retryHeld && batch.count < count && (batch.count === 0 || bytes < this.#maxBatchBytes)) {
      bytes += this.#fresh.send(
        batch,
        count - batch.count,
        this.#maxBatchBytes - bytes,
        (ref) => {
          const id = this.#takeId();
          lane.ledger.add(id, ref);
          if (firstId < 0) firstId = id;
          return id;
        },
        budget - bytes,
        batch.count === 0 && starving,
      );
    }
    const sent = batch.count;
    if (sent === 0) return 0;
    lane.lingeringSince = Number.NaN;
    lane.idleWorkers = Math.max(0, lane.idleWorkers - sent); // until the node reports again
    lane.inFlightBytes += bytes;
    // Time one item per batch: enough to see queueing build up, cheap enough to do always.
    if (lane.samples.size < 64) lane.samples.set(firstId, performance.now());
    lane.target.sendFeed(this.#frameOf(batch));
    return sent;
  }

  /** The spread of a pump (see SPREAD_ROUND_TRIP_MS): when the waiting items fit in the lanes' room. */
  #spreadNow(): Spread | undefined {
    let inFlight = 0;
    let window = 0;
    let workers = 0;
    for (const lane of this.#lanes) {
      if (lane.draining || this.#isolated?.lane === lane) continue;
      inFlight += lane.ledger.size;
      window += lane.window.size;
      workers += lane.workers;
    }
    const items = inFlight + this.queued;
    return items <= window && workers > 0 ? { items, workers } : undefined;
  }

  /**
   * The feed frame of `batch`, as pieces to write in order: records of the feed queue's chunks as they
   * lie there (no copy, no fresh buffer), or a small frame copied out of the builder's buffer (kept), or
   * a large one handed over.
   */
  #frameOf(batch: RecordBatchBuilder): Uint8Array[] {
    if (batch.hasReferences) return batch.finishFramePieces("feed");
    return [batch.takeFrame("feed")];
  }

  /** Whether `lane`'s partial batch should wait longer; arms a pump for when its linger ends. */
  #linger(lane: NodeLane): boolean {
    const now = performance.now();
    if (Number.isNaN(lane.lingeringSince)) lane.lingeringSince = now;
    const roundTrip = lane.window.minLatencyMs;
    const lingerMs = Number.isFinite(roundTrip)
      ? Math.min(MAX_FEED_LINGER_MS, Math.max(FEED_LINGER_MS, roundTrip / 4))
      : FEED_LINGER_MS;
    const left = lane.lingeringSince + lingerMs - now;
    if (left <= 0) return false;
    this.#lingerTimer ??= setTimeout(() => {
      this.#lingerTimer = undefined;
      this.pump();
    }, left);
    return true;
  }

  /** Sends the first quarantined item alone to `lane` (which has nothing else in flight). */
  #isolate(lane: NodeLane): number {
    const resend = this.#quarantine.shift()!;
    const id = this.#takeId();
    const batch = this.#smallBatch;
    batch.append(RecordKind.Input, 0, 0, id, resend.bytes);
    lane.ledger.add(id, resend.bytes);
    this.#lost.set(id, resend.lost);
    this.#isolated = { lane, id };
    lane.inFlightBytes += RECORD_HEADER_BYTES + resend.bytes.length;
    lane.idleWorkers = Math.max(0, lane.idleWorkers - 1);
    lane.target.sendFeed(this.#frameOf(batch));
    return 1;
  }

  /**
   * An item in flight for long keeps its whole feed chunk alive. At most once per `staleChunkMs`, the
   * items of chunks sent out that long ago get bytes of their own in the ledgers, and the chunks go.
   * Items done in normal time never pay this: their chunks are gone before they are stale.
   */
  #releaseStaleChunks(): void {
    const now = this.#fresh.clock();
    if (now - this.#staleCheckedAt < this.#staleChunkMs) return;
    this.#staleCheckedAt = now;
    const stale = this.#fresh.staleChunks(this.#staleChunkMs);
    if (stale.size === 0) return;
    for (const lane of this.#lanes) {
      for (const [id, entry] of lane.ledger.entries()) {
        if (typeof entry === "number" && stale.has(this.#fresh.chunkOf(entry)))
          lane.ledger.replace(id, this.#fresh.copyOut(entry));
      }
    }
  }

  /** A ledger entry's item is finished with: its feed record (if it has one) is let go. Returns its bytes. */
  #release(entry: LedgerEntry): number {
    if (typeof entry !== "number") return entry.length;
    return this.#fresh.release(entry);
  }

  /** The next item id (ids are u32 and never 0). */
  #takeId(): number {
    const id = this.#nextId;
    this.#nextId = (this.#nextId + 1) >>> 0 || 1;
    return id;
  }

  /** Drops every queued item and every lane's ledger (on reset). */
  clear(): void {
    clearTimeout(this.#lingerTimer);
    this.#lingerTimer = undefined;
    this.#retry = [];
    this.#retryBytes = 0;
    this.#quarantine = [];
    this.#isolated = undefined;
    this.#lost.clear();
    this.#fresh.clear();
    for (const lane of this.#lanes) {
      lane.ledger.clear();
      lane.samples.clear();
    }
    this.#lanes = [];
  }
}

/** A pump's spread (see SPREAD_ROUND_TRIP_MS): the items in flight and waiting, the open lanes' workers. */
interface Spread {
  items: number;
  workers: number;
}

/**
 * How many more items `lane` takes in a pump's spread: its workers' part of all the items in flight and
 * waiting, less what it has (no bound without a spread, or for a lane whose items come back fast). Its
 * room bounds it as ever; what a full lane leaves goes out after every lane had its share, in batches.
 */
function shareOf(lane: NodeLane, spread: Spread | undefined): number {
  if (spread === undefined || lane.window.minLatencyMs < SPREAD_ROUND_TRIP_MS) return Number.POSITIVE_INFINITY;
  return Math.ceil((spread.items * lane.workers) / spread.workers) - lane.ledger.size;
}
