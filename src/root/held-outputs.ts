import type { KeptBuffers } from "../protocol/kept-buffers.ts";

/** A task error's encoded report, held in its place among its item's outputs. */
export class HeldError {
  constructor(readonly bytes: Uint8Array) {}
}

/** What an item gave, in order: encoded outputs, and the task errors among them. */
export type Held = Uint8Array | HeldError;

/**
 * Outputs the root holds until their item is done on its node (exactly-once delivery): an item's
 * outputs, and its task errors, are handed out only once its Done arrived from the node that ran it
 * (an error reported before its worker died would be reported again by the run that follows). Those of an item whose
 * worker died (a Retract record) or whose node was lost are dropped: the item runs again and gives
 * them again. Held bytes are bounded: an item that would go past `maxBytes` loses what it held and
 * is reported, at its Done, as a task error naming the limit.
 */
export class HeldOutputs<Source> {
  /** Per node, per item id: the encoded outputs held, in order. */
  readonly #held = new Map<Source, Map<number, Held[]>>();
  /** Per node, items whose outputs went past the bound (dropped until their Done). */
  readonly #overflowed = new Map<Source, Set<number>>();
  #bytes = 0;

  /**
   * `memory`: where results messages of megabytes were joined; an output held as a view of such memory
   * holds it (see KeptBuffers) until it is handed out (`handedOut`) or dropped.
   */
  constructor(
    readonly maxBytes: number,
    readonly memory?: KeptBuffers,
  ) {}

  /** Bytes held now. */
  get bytes(): number {
    return this.#bytes;
  }

  /**
   * Holds an output's encoded bytes (or a task error's, `error`) for item `id` of `source`: `bytes` is a
   * view of a results frame, which nothing writes again. A copy is held, so that a small output does not
   * keep its whole frame alive; an output that fills most of its memory (a large one) is held as it is.
   */
  hold(source: Source, id: number, bytes: Uint8Array, error = false): void {
    const overflowed = this.#overflowed.get(source);
    if (overflowed?.has(id)) return;
    let items = this.#held.get(source);
    if (items === undefined) this.#held.set(source, (items = new Map()));
    if (this.#bytes + bytes.length > this.maxBytes) {
      this.#bytes -= sizeOf(items.get(id));
      this.#letGo(items.get(id));
      items.delete(id);
      if (overflowed === undefined) this.#overflowed.set(source, new Set([id]));
      else overflowed.add(id);
      return;
    }
    const own = 2 * bytes.length >= bytes.buffer.byteLength ? bytes : bytes.slice();
    if (own === bytes) this.memory?.hold(bytes);
    const held = error ? new HeldError(own) : own;
    const list = items.get(id);
    if (list === undefined) items.set(id, [held]);
    else list.push(held);
    this.#bytes += bytes.length;
  }

  /** Whether outputs of item `id` of `source` are held (or were, and went past the bound). */
  holds(source: Source, id: number): boolean {
    if (this.#bytes === 0 && this.#overflowed.size === 0) return false;
    return this.#held.get(source)?.has(id) === true || this.#overflowed.get(source)?.has(id) === true;
  }

  /**
   * Item `id` is done on `source`: its held outputs, to hand out now (none, or `overflowed` when they
   * went past the bound and were dropped).
   */
  release(source: Source, id: number): Held[] | "overflowed" | undefined {
    if (this.#bytes === 0 && this.#overflowed.size === 0) return undefined; // the common case: nothing held
    const overflowed = this.#overflowed.get(source);
    if (overflowed?.delete(id)) {
      if (overflowed.size === 0) this.#overflowed.delete(source);
      return "overflowed";
    }
    const items = this.#held.get(source);
    const list = items?.get(id);
    if (list === undefined) return undefined;
    items!.delete(id);
    this.#bytes -= sizeOf(list);
    return list;
  }

  /** Drops what item `id` of `source` gave so far (its worker died; it runs again). */
  retract(source: Source, id: number): void {
    const overflowed = this.#overflowed.get(source);
    if (overflowed?.delete(id) && overflowed.size === 0) this.#overflowed.delete(source);
    const items = this.#held.get(source);
    this.#bytes -= sizeOf(items?.get(id));
    this.#letGo(items?.get(id));
    items?.delete(id);
  }

  /** Drops everything `source` gave (the node is lost; its unfinished items are sent again). */
  dropSource(source: Source): void {
    for (const list of this.#held.get(source)?.values() ?? []) {
      this.#bytes -= sizeOf(list);
      this.#letGo(list);
    }
    this.#held.delete(source);
    this.#overflowed.delete(source);
  }

  /** An output (or error) `release` gave is handed out (decoded) or dropped: its bytes are no longer read. */
  handedOut(held: Held): void {
    this.memory?.release(held instanceof HeldError ? held.bytes : held);
  }

  clear(): void {
    for (const items of this.#held.values()) for (const list of items.values()) this.#letGo(list);
    this.#held.clear();
    this.#overflowed.clear();
    this.#bytes = 0;
  }

  /** What was held of an item is dropped: the memory its views held is let go. */
  #letGo(list: Held[] | undefined): void {
    if (this.memory === undefined || list === undefined) return;
    for (const held of list) this.handedOut(held);
  }
}

function sizeOf(list: Held[] | undefined): number {
  let bytes = 0;
  for (const each of list ?? []) bytes += each instanceof HeldError ? each.bytes.length : each.length;
  return bytes;
}
