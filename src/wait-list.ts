/**
 * Promises that resolve once a condition holds. The owner calls `settle()` whenever its state changed
 * in a way a condition may depend on; nothing polls.
 *
 * @example
 * const waits = new WaitList();
 * const idle = waits.until(() => queue.length === 0);
 * queue.shift();
 * waits.settle(); // `idle` resolves
 */
export class WaitList {
  #waiters: Array<{ ready: () => boolean; resolve: () => void; reject: (error: Error) => void }> = [];

  /** Pending waits. */
  get size(): number {
    return this.#waiters.length;
  }

  /**
   * Resolves at once when `ready()` holds, else at the first `settle()` that finds it true; with
   * `signal`, rejects with its reason if it aborts first (and the wait is gone from the list).
   */
  until(ready: () => boolean, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (ready()) return Promise.resolve();
    if (signal === undefined) return new Promise((resolve, reject) => this.#waiters.push({ ready, resolve, reject }));
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        this.#waiters = this.#waiters.filter((other) => other !== waiter);
        reject(signal.reason);
      };
      const waiter = {
        ready,
        resolve: () => {
          signal.removeEventListener("abort", onAbort);
          resolve();
        },
        reject: (error: Error) => {
          signal.removeEventListener("abort", onAbort);
          reject(error);
        },
      };
      this.#waiters.push(waiter);
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** Resolves every wait whose condition holds now. */
  settle(): void {
    if (this.#waiters.length === 0) return;
    this.#waiters = this.#waiters.filter((waiter) => {
      if (!waiter.ready()) return true;
      waiter.resolve();
      return false;
    });
  }

  /** Rejects every pending wait with `error`. */
  rejectAll(error: Error): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const waiter of waiters) waiter.reject(error);
  }
}
