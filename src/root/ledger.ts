/**
 * A node lane's items in flight, by id: what the root must be able to re-send if the node is lost.
 *
 * Every item passes through here twice (sent, done), so this is one of the root's hottest tables. Ids
 * are handed out in increasing order and most items are done soon after they are sent, so the ids in
 * flight are nearly a sliding range: the table is an array indexed by an id's low bits, and a slot
 * holds the id it belongs to. An id that finds its slot taken by an older one that is still in flight
 * (an item that lingers, or ids spread over several lanes) moves that older one to a `Map` beside the
 * array; when the `Map` grows past an eighth of the array, the array doubles. Lookups are thus one
 * array read for almost every item, and never wrong for the others.
 */

/** Where an item's bytes are: a feed-queue record reference, or bytes of its own. */
export type LedgerEntry = number | Uint8Array;

const INITIAL_CAPACITY = 4096;

export class Ledger {
  #mask = INITIAL_CAPACITY - 1;
  /** The id in each slot; 0 when empty (ids are never 0). */
  #ids = new Uint32Array(INITIAL_CAPACITY);
  /** The entry in each slot; 0 when empty (so the array stays of one kind and drops what it held). */
  #entries: LedgerEntry[] = new Array<LedgerEntry>(INITIAL_CAPACITY).fill(0);
  /** Entries pushed out of their slot by a newer id while still in flight. */
  readonly #overflow = new Map<number, LedgerEntry>();
  #size = 0;

  get size(): number {
    return this.#size;
  }

  /** Slots in the array (for tests: it grows only when many entries are pushed out). */
  get capacity(): number {
    return this.#mask + 1;
  }

  /** Adds an id not in the ledger. */
  add(id: number, entry: LedgerEntry): void {
    const slot = id & this.#mask;
    const held = this.#ids[slot]!;
    if (held !== 0) {
      if (this.#overflow.size >= (this.#mask + 1) >>> 3) {
        this.#grow();
        this.add(id, entry);
        return;
      }
      this.#overflow.set(held, this.#entries[slot]!); // still in flight: it lingers, or ids are spread
    }
    this.#ids[slot] = id;
    this.#entries[slot] = entry;
    this.#size++;
  }

  get(id: number): LedgerEntry | undefined {
    const slot = id & this.#mask;
    if (this.#ids[slot] === id) return this.#entries[slot];
    return this.#overflow.size === 0 ? undefined : this.#overflow.get(id);
  }

  /** Gives an id in the ledger a new entry. */
  replace(id: number, entry: LedgerEntry): void {
    const slot = id & this.#mask;
    if (this.#ids[slot] === id) this.#entries[slot] = entry;
    else if (this.#overflow.has(id)) this.#overflow.set(id, entry);
  }

  /** Removes an id; returns its entry, or undefined when it was not in the ledger. */
  take(id: number): LedgerEntry | undefined {
    const slot = id & this.#mask;
    if (this.#ids[slot] === id) {
      const entry = this.#entries[slot];
      this.#ids[slot] = 0;
      this.#entries[slot] = 0;
      this.#size--;
      return entry;
    }
    if (this.#overflow.size === 0) return undefined;
    const entry = this.#overflow.get(id);
    if (entry !== undefined) {
      this.#overflow.delete(id);
      this.#size--;
    }
    return entry;
  }

  /** Every id and entry (array slots, then the pushed-out ones). */
  *entries(): IterableIterator<[number, LedgerEntry]> {
    const ids = this.#ids;
    for (let slot = 0; slot < ids.length; slot++) if (ids[slot] !== 0) yield [ids[slot]!, this.#entries[slot]!];
    yield* this.#overflow;
  }

  clear(): void {
    this.#mask = INITIAL_CAPACITY - 1;
    this.#ids = new Uint32Array(INITIAL_CAPACITY);
    this.#entries = new Array<LedgerEntry>(INITIAL_CAPACITY).fill(0);
    this.#overflow.clear();
    this.#size = 0;
  }

  /** Doubles the array and puts every entry (pushed-out ones too, where their slot is free) back in. */
  #grow(): void {
    const all = [...this.entries()];
    const capacity = (this.#mask + 1) * 2;
    this.#mask = capacity - 1;
    this.#ids = new Uint32Array(capacity);
    this.#entries = new Array<LedgerEntry>(capacity).fill(0);
    this.#overflow.clear();
    this.#size = 0;
    // Newest first: where two ids share a slot, the newer keeps it (the older is the one lingering).
    all.sort((a, b) => b[0] - a[0]);
    for (const [id, entry] of all) {
      const slot = id & this.#mask;
      if (this.#ids[slot] === 0) {
        this.#ids[slot] = id;
        this.#entries[slot] = entry;
      } else this.#overflow.set(id, entry);
      this.#size++;
    }
  }
}
