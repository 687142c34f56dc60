/**
 * The watchdog: a node whose main thread stops running — a loop that never yields, in pcluster or in a
 * library — answers no one. Its roots give it up after their heartbeat timeout and send its items
 * elsewhere, but the process stays, holding its port and its memory, and its supervisor (systemd,
 * Docker, `Root.local`) sees nothing wrong. Such a hang was found once (a wait on the socket's queue that
 * resolved at once, forever; fixed): this makes the next one a restart instead of a node lost for good.
 *
 * A thread of its own looks at a count that a timer of the main thread moves every second. Once the count
 * has not moved for `stallMs` of the watchdog's own looks, it says so on stderr and ends the process
 * (SIGKILL: nothing else would run in it), and its supervisor starts it again. A process stopped as a
 * whole (SIGSTOP, a suspended host) does not count: the watchdog was stopped too, and a look that comes
 * late starts the count afresh.
 */

/** How long the main thread may not run before the process is ended (`pcluster node --stall-exit`). */
export const DEFAULT_STALL_EXIT_MS = 60_000;
/** How often the main thread moves the count. */
const BEAT_MS = 1000;

/** What the watchdog's thread is started with (see watchdog-thread.ts). */
export interface WatchdogStart {
  /** An Int32 count the main thread moves every BEAT_MS. */
  beat: SharedArrayBuffer;
  stallMs: number;
  /** How often the thread looks. */
  everyMs: number;
  /** Names the process in the message. */
  name: string;
}

/**
 * The watchdog's count of how long the main thread has not run, from its looks at the beat count: looks
 * that find it unmoved add the time since the last look; a move, or a look that comes late (this thread
 * was held too: the process stopped, the host suspended), starts it afresh.
 */
export class StallWatch {
  #seen: number;
  #lookedAt: number;
  #stalledMs = 0;

  constructor(
    readonly everyMs: number,
    beat: number,
    now: number,
  ) {
    this.#seen = beat;
    this.#lookedAt = now;
  }

  /** A look at `beat` at time `now`; returns how long the main thread has not run, in ms. */
  look(beat: number, now: number): number {
    const sinceLook = now - this.#lookedAt;
    this.#lookedAt = now;
    if (beat !== this.#seen || sinceLook > LATE_LOOKS * this.everyMs) {
      this.#seen = beat;
      this.#stalledMs = 0;
    } else this.#stalledMs += sinceLook;
    return this.#stalledMs;
  }
}

/** A look this many periods after the last is late: the watchdog's thread was held too. */
const LATE_LOOKS = 3;

/**
 * Starts the watchdog for this process (a thread that does not keep it alive); returns a stop. `stallMs`
 * must be larger than BEAT_MS.
 */
export function startWatchdog(stallMs: number, name: string): () => void {
  const beat = new Int32Array(new SharedArrayBuffer(4));
  const timer = setInterval(() => Atomics.add(beat, 0, 1), BEAT_MS);
  timer.unref();
  const thread = new Worker(new URL("./watchdog-thread.ts", import.meta.url).href);
  const start: WatchdogStart = {
    beat: beat.buffer,
    stallMs,
    everyMs: Math.min(5000, Math.max(100, stallMs / 12)),
    name,
  };
  thread.postMessage(start);
  thread.unref();
  return () => {
    clearInterval(timer);
    thread.terminate();
  };
}
