import { Root } from "../../src/index.ts";
import { runDoubles } from "./forgetful.ts";

/**
 * A root script against an external node (`argv[2]`, "host:port") that runs a pipeline to its end and
 * then simply stops, forgetting `reset()` and `close()`. It must end by itself; the node frees itself
 * once its grace after the root's disconnect is over.
 */
const outputs = await runDoubles(new Root([process.argv[2]!]), "forgetful-remote");
console.log(`DONE ${outputs.length} ${outputs.reduce((total, output) => total + output, 0)}`);
