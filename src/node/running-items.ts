/**
 * The shared layout of a worker's items in progress, for a worker that runs several at once (or parks
 * items waiting for a retry): where in its input ring each item holding a place starts. The worker
 * writes it; the engine reads it after the worker died, to count an attempt for each of those items
 * (a crash takes down every item in progress), and to tell a worker that only waits from a stuck one.
 *
 * Slot 0 (an Int32): items holding a place now. Then two doubles per place: the item's input position
 * (-1: a free place; positions are uint32 counters, which a double holds exactly), and when it last got
 * something done (took its place, finished an async task call, wrote an output; `Date.now()`, the
 * clock both threads share), for the task timeout of one item among others that progress. A free place's
 * time is +Infinity, and a place taken gets its time before its position: the engine, reading while the
 * worker writes, must never see a live position beside a time from before it (0 at the start, or the
 * last item's there) — it took such an item, a few microseconds old, for one stuck since then, and ended
 * a healthy worker for it (an item beside it was given up: seen when the watch ran right after a drain).
 */
export class RunningItems {
  readonly #count: Int32Array;
  readonly #positions: Float64Array;
  readonly #free: number[] = [];
  readonly #places: number;

  constructor(readonly buffer: SharedArrayBuffer) {
    this.#count = new Int32Array(buffer, 0, 1);
    this.#positions = new Float64Array(buffer, 8);
    this.#places = this.#positions.length / 2;
  }

  /** A shared buffer for up to `places` items in progress, all free. */
  static allocate(places: number): SharedArrayBuffer {
    const buffer = new SharedArrayBuffer(8 + 16 * places);
    new RunningItems(buffer).clear();
    return buffer;
  }

  /** Empties the table (a new worker on it starts with nothing in progress). */
  clear(): void {
    for (let place = 0; place < this.#places; place++) {
      this.#positions[place * 2 + 1] = Number.POSITIVE_INFINITY;
      this.#positions[place * 2] = -1;
    }
    Atomics.store(this.#count, 0, 0);
    this.#free.length = 0;
    for (let place = this.#places - 1; place >= 0; place--) this.#free.push(place);
  }

  /** Notes that the item at input position `position` holds a place; returns the place. */
  add(position: number): number {
    const place = this.#free.pop();
    if (place === undefined) throw new RangeError("more items in progress than the worker's concurrency");
    this.#positions[place * 2 + 1] = Date.now(); // the time first (see above)
    Atomics.add(this.#count, 0, 1); // keeps the two stores in that order on every CPU
    this.#positions[place * 2] = position;
    return place;
  }

  /** The item at `place` got something done. */
  touch(place: number): void {
    this.#positions[place * 2 + 1] = Date.now();
  }

  remove(place: number): void {
    this.#positions[place * 2 + 1] = Number.POSITIVE_INFINITY;
    this.#positions[place * 2] = -1;
    this.#free.push(place);
    Atomics.sub(this.#count, 0, 1);
  }

  /** Items holding a place now. */
  get count(): number {
    return Atomics.load(this.#count, 0);
  }

  /** The input positions of the items holding a place (read by the engine once the worker is gone). */
  positions(): number[] {
    return this.overdue(Number.POSITIVE_INFINITY);
  }

  /** The input positions of the items that got nothing done since `before` (a `Date.now()` time). */
  overdue(before: number): number[] {
    const positions: number[] = [];
    for (let place = 0; place < this.#places; place++) {
      const position = this.#positions[place * 2]!;
      if (position < 0) continue;
      Atomics.load(this.#count, 0); // reads the time after the position on every CPU
      if (this.#positions[place * 2 + 1]! < before) positions.push(position);
    }
    return positions;
  }
}
