/**
 * What bounds a worker that runs several items at once: `InProgressItems`. An item holds one of
 * `limit` places (the worker's `concurrency`) while it runs; one waiting for a retry's backoff gives
 * its place up (parked, at most `maxParked` of them), and takes one back, before new input, when its
 * backoff is over. The worker's loop takes the next input only while a place is free.
 *
 * Input bytes go back to the engine in ring order: the ring is single-producer/single-consumer and
 * released as one counter, so an item finishing early keeps its bytes (and everything after them)
 * until every item before it is done too. Memory stays bounded: by the places, the parked items, and
 * the ring itself.
 */
import type { RunningItems } from "../running-items.ts";
import type { ItemRun } from "./item-run.ts";

export class InProgressItems {
  /** Items holding a place, and items parked for a retry. */
  active = 0;
  parked = 0;
  /** Items started and not yet given back, in ring order (a queue: `#head` is its front). */
  readonly #order: ItemRun[] = [];
  #head = 0;
  /** Items finished since the last commit began. */
  #finished: ItemRun[] = [];
  /** Parked items whose backoff is over, waiting for a place, in order. */
  readonly #resuming: Array<{ run: ItemRun; resolve: () => void }> = [];
  #changed: { promise: Promise<void>; resolve: () => void } | undefined;
  /** An item that runs alone (see FLAG_ALONE) holds every place while it runs. */
  #alone: ItemRun | undefined;

  constructor(
    readonly limit: number,
    readonly maxParked: number,
    readonly table: RunningItems,
    /** Whether the worker is to pause: no item takes a place meanwhile. */
    readonly sleeping: () => boolean,
  ) {
    table.clear();
  }

  /** Whether the loop may start another input item now. */
  get hasRoom(): boolean {
    if (this.#resuming.length > 0 || this.#alone !== undefined) return false;
    return this.active < this.limit && this.parked < this.maxParked;
  }

  /** Whether nothing is started and not given back. */
  get isEmpty(): boolean {
    return this.#head === this.#order.length;
  }

  /** A new input item takes a place (all of them, for one that runs alone: start it when none is active). */
  start(run: ItemRun): void {
    this.#order.push(run);
    if (run.alone) this.#alone = run;
    this.#enter(run);
  }

  /** The item's Done is written: its place is free. */
  finish(run: ItemRun): void {
    run.finished = true;
    this.#finished.push(run);
    this.#leave(run);
  }

  park(run: ItemRun): void {
    this.parked++;
    this.#leave(run);
  }

  /** A parked item wants its place back: at once when one is free, else first in line for the next. */
  resume(run: ItemRun): void | Promise<void> {
    this.parked--;
    if (run.alone) this.#alone = run;
    if (this.#free(run) && (this.#resuming.length === 0 || run.alone)) return this.#enter(run);
    // One that runs alone goes first: the places it waits for are all kept for it.
    return new Promise((resolve) => {
      if (run.alone) this.#resuming.unshift({ run, resolve });
      else this.#resuming.push({ run, resolve });
    });
  }

  /** After a pause: parked items whose backoff is over take the free places. */
  wake(): void {
    this.#handPlaces();
    this.#signal();
  }

  /** Resolves at the next change: an item finished, parked, or took its place back. */
  whenChanged(): Promise<void> {
    this.#changed ??= Promise.withResolvers<void>();
    return this.#changed.promise;
  }

  /** Items finished since the last call, whose Done a commit is about to make visible. */
  takeFinished(): ItemRun[] {
    const finished = this.#finished;
    this.#finished = [];
    return finished;
  }

  /**
   * Drops the committed items at the front of the order; returns the position of the oldest item not
   * given back (where input may be released up to), or `fallback` when none is left.
   */
  releasePoint(fallback: number): number {
    const order = this.#order;
    while (this.#head < order.length && order[this.#head]!.committed) order[this.#head++] = undefined as never;
    if (this.#head === order.length) {
      order.length = 0;
      this.#head = 0;
      return fallback;
    }
    if (this.#head > 1024 && this.#head * 2 > order.length) {
      order.splice(0, this.#head);
      this.#head = 0;
    }
    return order[this.#head]!.position;
  }

  #enter(run: ItemRun): void {
    this.active++;
    run.place = this.table.add(run.position);
    this.#signal();
  }

  /** Whether `run` may take a place now. */
  #free(run: ItemRun): boolean {
    if (this.sleeping()) return false;
    if (this.#alone !== undefined) return this.#alone === run && this.active === 0;
    return this.active < this.limit;
  }

  #leave(run: ItemRun): void {
    if (this.#alone === run) this.#alone = undefined;
    this.table.remove(run.place);
    run.place = -1;
    this.active--;
    this.#handPlaces();
    this.#signal();
  }

  #handPlaces(): void {
    while (this.#resuming.length > 0 && this.#free(this.#resuming[0]!.run)) {
      const { run, resolve } = this.#resuming.shift()!;
      this.#enter(run);
      resolve();
    }
  }

  #signal(): void {
    const changed = this.#changed;
    if (changed === undefined) return;
    this.#changed = undefined;
    changed.resolve();
  }
}
