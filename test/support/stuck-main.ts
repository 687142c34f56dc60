// Run by watchdog.test.ts as a process of its own: `bun test/support/stuck-main.ts <stallMs>`. Starts
// the node's watchdog, prints "ready", then stops its main thread for good: a wait that never returns
// (to the watchdog the same as a loop that never yields, as the main thread moves no count in either;
// the wait spends no CPU for the seconds the watchdog takes).
import { startWatchdog } from "../../src/node/watchdog.ts";

const stallMs = Number(process.argv[2]);
startWatchdog(stallMs, "stuck-main");
console.log("ready");
setTimeout(() => {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
}, 10);
