/**
 * Fan-out sharing between workers, decided inside the workers without asking the engine: a worker
 * about to run out of input says it is hungry, and a worker pulling a large generator claims it and
 * hands it every other sub-item (see taskchain.ts's SHARE_FROM for when a fan-out counts as large).
 */
import { Control } from "../worker-messages.ts";

/** Sub-items a claimed worker gets (every other one, alternating with this worker) before it must ask again. */
const SHARE_BUDGET = 1024;

/**
 * Hunger: how a worker about to run out of input tells the busy ones, so that a worker fanning out a
 * generator hands it sub-items. Each worker owns one slot (1: hungry) and a shared count keeps the
 * busy workers' check to one load per sub-item. A claim flips a slot from 1 to 0, so each announcement
 * is taken by one sharer at most, and no worker can take back another's.
 */
export class Hunger {
  constructor(
    readonly control: Int32Array,
    readonly self: number,
    readonly workers: number,
  ) {}

  announce(): void {
    if (Atomics.compareExchange(this.control, Control.Hungry + this.self, 0, 1) === 0) {
      Atomics.add(this.control, Control.HungryCount, 1);
    }
  }

  retract(): void {
    if (Atomics.load(this.control, Control.Hungry + this.self) === 0) return;
    this.#take(this.self);
  }

  /** Claims another hungry worker; returns its index, or -1 when none is hungry. */
  claim(): number {
    if (Atomics.load(this.control, Control.HungryCount) <= 0) return -1;
    for (let other = 0; other < this.workers; other++) {
      if (other !== this.self && this.#take(other)) return other;
    }
    return -1;
  }

  #take(worker: number): boolean {
    if (Atomics.compareExchange(this.control, Control.Hungry + worker, 1, 0) !== 1) return false;
    Atomics.sub(this.control, Control.HungryCount, 1);
    return true;
  }
}

/**
 * Shares a fan-out with the hungry workers this one claimed: sub-items go round-robin to this worker and
 * each claimed one, so all of them run an equal share. Each claim lasts SHARE_BUDGET sub-items, long
 * enough to hide the engine's round trip; a worker still hungry after that announces itself again.
 */
export class ShareRotation {
  readonly #targets: number[] = [];
  readonly #budgets: number[] = [];
  #turn = 0;

  constructor(
    readonly hunger: Hunger,
    readonly budget = SHARE_BUDGET,
  ) {}

  /** The worker that should run the next sub-item, or -1 for this one. */
  next(): number {
    const claimed = this.hunger.claim();
    if (claimed >= 0) {
      // A worker claimed again while it still holds a claim gets its budget renewed, not a second turn
      // in the rotation (which would hand it two sub-items for every one run here).
      const index = this.#targets.indexOf(claimed);
      if (index >= 0) this.#budgets[index] = this.budget;
      else {
        this.#targets.push(claimed);
        this.#budgets.push(this.budget);
      }
    }
    const targets = this.#targets.length;
    if (targets === 0) return -1;
    this.#turn = this.#turn >= targets ? 0 : this.#turn + 1;
    if (this.#turn === 0) return -1;
    const index = this.#turn - 1;
    const target = this.#targets[index]!;
    if (--this.#budgets[index]! === 0) this.#drop(index);
    return target;
  }

  #drop(index: number): void {
    this.#targets.splice(index, 1);
    this.#budgets.splice(index, 1);
  }
}
