// Logs `count` lines "<tag> <i>" to the log server at `addr` ("-": no address, so to stdout), one
// every `intervalMs` (0: all in one synchronous loop), then prints how long the log() calls took and
// exits without flushing: delivering queued lines before exit is the client's job.
import { log, setDefaultLogAddress } from "../../src/log/log.ts";

const [addr = "-", count = "10", intervalMs = "0", tag = "line"] = process.argv.slice(2);
if (addr !== "-") setDefaultLogAddress(addr);
let busyMs = 0;
for (let i = 0; i < Number(count); i++) {
  const start = performance.now();
  log(`${tag} ${i}`);
  busyMs += performance.now() - start;
  if (Number(intervalMs) > 0) await Bun.sleep(Number(intervalMs));
}
console.log(`logged ${count} lines in ${busyMs.toFixed(1)} ms`);
