// The watchdog's thread (see watchdog.ts): ends the process once its main thread has not moved the count
// for `stallMs` of this thread's own, timely looks.
import { writeSync } from "node:fs";
import { StallWatch, type WatchdogStart } from "./watchdog.ts";

const port = globalThis as unknown as { onmessage: ((event: MessageEvent<WatchdogStart>) => void) | null };

port.onmessage = ({ data }) => {
  port.onmessage = null;
  const beat = new Int32Array(data.beat);
  const watch = new StallWatch(data.everyMs, Atomics.load(beat, 0), performance.now());
  setInterval(() => {
    const stalledMs = watch.look(Atomics.load(beat, 0), performance.now());
    if (stalledMs < data.stallMs) return;
    writeSync(
      2,
      `${data.name}: its main thread has not run for ${Math.round(stalledMs / 1000)} s (a loop that never ` +
        "yields?); ending the process so that its supervisor starts it again (--stall-exit)\n",
    );
    process.kill(process.pid, "SIGKILL");
  }, data.everyMs);
};
