// Run by watchdog.test.ts as a process of its own: `bun test/support/stuck-main.ts <stallMs>`. Starts
// the node's watchdog, prints "ready", then stops its main thread for good (a loop that never yields).
import { startWatchdog } from "../../src/node/watchdog.ts";

const stallMs = Number(process.argv[2]);
startWatchdog(stallMs, "stuck-main");
console.log("ready");
setTimeout(() => {
  for (;;) {}
}, 10);
