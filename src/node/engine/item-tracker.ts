import { FLAG_SUB_ITEM } from "../../protocol/record.ts";

/**
 * Knows when a root's item is finished although parts of its fan-out ran on other workers.
 *
 * A worker that shares a sub-item hands it to the engine, which gives it an id of its own (a sub-item
 * id, flagged `FLAG_SUB_ITEM`) and counts one more outstanding part for the root item. The root item
 * is done when its own worker's Done and every shared part's Done have come in. Items that never
 * shared cost nothing here: the Maps only ever hold items with shared parts in flight.
 */
export class ItemTracker {
  /** Sub-item id → the root item id it descends from. */
  readonly #roots = new Map<number, number>();
  /** Root item id → outstanding parts (its own run plus shared sub-items), only while above 1. */
  readonly #parts = new Map<number, number>();
  /** Root item id → outputs its finished parts gave, while parts of it remain. */
  readonly #outputs = new Map<number, number>();
  /** How many outputs the root item `finish` last returned gave, all its parts together. */
  finishedOutputs = 0;
  #nextSubId = 1;

  /** The root item id behind a record's id. */
  rootOf(flags: number, id: number): number {
    return (flags & FLAG_SUB_ITEM) === 0 ? id : (this.#roots.get(id) ?? id);
  }

  /** Registers a shared sub-item of the item (`flags`, `id`); returns the sub-item's id. */
  share(flags: number, id: number): number {
    const root = this.rootOf(flags, id);
    this.#parts.set(root, (this.#parts.get(root) ?? 1) + 1);
    if (!this.#outputs.has(root)) this.#outputs.set(root, 0);
    const subId = this.#nextSubId;
    this.#nextSubId = (this.#nextSubId + 1) >>> 0 || 1;
    this.#roots.set(subId, root);
    return subId;
  }

  /**
   * One part of an item is finished, having given `outputs` outputs. Returns the root item id when
   * that was its last part (the root item is done; `finishedOutputs` says how many outputs it gave in
   * all), or -1 while parts remain.
   */
  finish(flags: number, id: number, outputs: number): number {
    let root = id;
    if ((flags & FLAG_SUB_ITEM) !== 0) {
      root = this.#roots.get(id) ?? id;
      this.#roots.delete(id);
    }
    this.finishedOutputs = outputs;
    if (this.#outputs.size === 0) return root; // no item has shared parts in flight
    const parts = this.#parts.get(root);
    const earlier = this.#outputs.get(root);
    if (parts === undefined) {
      // Its last part: the outputs of the others come with it.
      if (earlier !== undefined) {
        this.#outputs.delete(root);
        this.finishedOutputs += earlier;
      }
      return root;
    }
    this.#outputs.set(root, (earlier ?? 0) + outputs);
    if (parts > 2) this.#parts.set(root, parts - 1);
    else this.#parts.delete(root); // down to one part: its Done finishes the root
    return -1;
  }

  /** Sub-items in flight (for tests and status). */
  get subItems(): number {
    return this.#roots.size;
  }

  clear(): void {
    this.#roots.clear();
    this.#parts.clear();
    this.#outputs.clear();
  }
}
