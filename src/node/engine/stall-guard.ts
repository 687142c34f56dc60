/**
 * The task timeout: a worker that has an item and gets nothing done for `timeoutMs` — no task call
 * finishes, no output is written — is stuck (a task in an endless loop, or awaiting a promise that
 * never settles), and would hold its item, and the pipeline's `waitEmpty()`, forever. The engine ends
 * it; it is replaced and its item retried like any crash (see Engine).
 */

/** What the guard knows of one worker, sampled each time it looks. */
export interface ProgressSample {
  /** Whether the worker has an item to run and may run it (not asleep, not held by a full output). */
  busy: boolean;
  /** Any number that changes whenever the worker gets something done. */
  progress: number;
}

export class StallGuard {
  readonly #marks: number[] = [];
  readonly #since: number[] = [];
  readonly #busy: boolean[] = [];

  constructor(readonly timeoutMs: number) {}

  /** Looks at the workers; returns the index of one stuck for `timeoutMs` or longer, or -1. */
  check(workers: readonly ProgressSample[], now = performance.now()): number {
    let stuck = -1;
    for (let index = 0; index < workers.length; index++) {
      const worker = workers[index]!;
      const wasBusy = this.#busy[index] === true;
      this.#busy[index] = worker.busy;
      if (!worker.busy || !wasBusy || this.#marks[index] !== worker.progress) {
        // Its clock starts (again) at the first look that finds it busy and where it is now.
        this.#marks[index] = worker.progress;
        this.#since[index] = now;
      } else if (stuck < 0 && now - this.#since[index]! >= this.timeoutMs) {
        stuck = index;
      }
    }
    if (stuck >= 0) this.#marks[stuck] = Number.NaN; // never equal: its replacement is timed afresh
    return stuck;
  }
}
