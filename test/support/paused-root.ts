import { join } from "node:path";
import { Root } from "../../src/index.ts";
import { block } from "../fixtures/tasks/index.ts";
import { REPO } from "./processes.ts";

/**
 * A root script against external nodes (`argv[2]`: "host:port,host:port") that the test stops
 * (SIGSTOP) mid-run for longer than the nodes' --root-timeout, then continues: it prints RUNNING once
 * outputs come, and at the end DONE with its outputs, the distinct ones, and the items re-sent.
 */
const ITEMS = 400;
const cluster = new Root(process.argv[2]!.split(","));
const outputs: number[] = [];
await cluster.setup("paused", "1", [{ function: block }], {
  localPackages: [join(REPO, "test/fixtures/tasks")],
  outputHandler: (output) => {
    if (outputs.push(output.id) === 20) console.log("RUNNING");
  },
});
await cluster.run(Array.from({ length: ITEMS }, (_, id) => ({ id, ms: 20 })));
console.log(`DONE ${outputs.length} ${new Set(outputs).size} ${cluster.progress.resent}`);
await cluster.close();
