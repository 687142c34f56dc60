import { join } from "node:path";
import { Root } from "../../src/index.ts";
import { double } from "../fixtures/tasks/index.ts";
import { REPO } from "./processes.ts";

/**
 * A root script against an external node (`argv[2]`, "host:port") that runs a pipeline to its end and
 * then simply stops, forgetting `reset()` and `close()`. It must end by itself; the node frees itself
 * once its grace after the root's disconnect is over.
 */
const cluster = new Root([process.argv[2]!]);
const outputs: number[] = [];
await cluster.setup("forgetful-remote", "1", [{ function: double }], {
  localPackages: [join(REPO, "test/fixtures/tasks")],
  outputHandler: (output) => void outputs.push(output as number),
});
cluster.feed(...Array.from({ length: 200 }, (_, i) => i));
await cluster.waitEmpty();
console.log(`DONE ${outputs.length} ${outputs.reduce((total, output) => total + output, 0)}`);
