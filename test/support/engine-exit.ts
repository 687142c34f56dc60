// Sets up an engine, runs items, resets, sets up a second one, resets it, has a third fail its setup,
// and then must exit on its own: nothing (worker, waitAsync, timer, log socket) may keep the process
// alive after a reset, and a failed setup leaves no worker behind.
import { EngineHarness } from "./engine.ts";

const dir = process.argv[2]!;
const first = await EngineHarness.start(dir, [{ export: "identity" }], { workers: 2 });
first.feed(Array.from({ length: 1000 }, (_, i) => i));
await first.waitEmpty();
console.log(`outputs ${first.outputCount}`);
await first.engine.reset();
const second = await EngineHarness.start(dir, [{ export: "identity" }], { workers: 2 });
second.feed(Array.from({ length: 10 }, (_, i) => i));
await second.waitEmpty();
console.log(`second setup outputs ${second.outputCount}`);
await second.engine.reset();
const third = await EngineHarness.start(dir, [{ export: "identity" }, { export: "noSuchTask" }], { workers: 2 }).catch(
  (error: Error) => error,
);
console.log(`third setup: ${third instanceof Error ? third.message : "did not fail"}`);
