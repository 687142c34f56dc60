/** One task error, as the dashboard lists it. */
export interface RecentError {
  /** Milliseconds since the epoch, when it was seen. */
  time: number;
  task: string;
  /** The root's id of the input item it descends from. */
  item: number;
  message: string;
  /** True when the item was given up after its worker died on it too often (not a throw). */
  failed: boolean;
  /** The node ("host:port") it happened on, where known. */
  node?: string;
}

/** Longest message kept: a dashboard line, not a log (the log has the whole error and its stack). */
const MAX_MESSAGE_CHARS = 500;

/** The last few task errors, newest first: a fixed bound, so an error storm costs nothing more. */
export class RecentErrors {
  #errors: RecentError[] = [];

  constructor(readonly capacity = 20) {}

  add(error: Omit<RecentError, "time"> & { time?: number }): void {
    const long = error.message.length > MAX_MESSAGE_CHARS;
    const message = long ? `${error.message.slice(0, MAX_MESSAGE_CHARS)}…` : error.message;
    this.#errors.unshift({ ...error, message, time: error.time ?? Date.now() });
    if (this.#errors.length > this.capacity) this.#errors.length = this.capacity;
  }

  list(): RecentError[] {
    return this.#errors.slice();
  }

  clear(): void {
    this.#errors = [];
  }
}
