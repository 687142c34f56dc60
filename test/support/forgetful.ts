import { join } from "node:path";
import type { Root } from "../../src/index.ts";
import { double } from "../fixtures/tasks/index.ts";
import { REPO } from "./processes.ts";

/**
 * What the "forgetful" scripts do: set `double` up on `cluster` as pipeline `name`, feed 0…199 and wait
 * until all is done. Returns the outputs; the script then simply stops, without `reset()` or `close()`.
 */
export async function runDoubles(cluster: Root, name: string): Promise<number[]> {
  const outputs: number[] = [];
  await cluster.setup(name, "1", [{ function: double }], {
    localPackages: [join(REPO, "test/fixtures/tasks")],
    outputHandler: (output) => void outputs.push(output as number),
  });
  cluster.feed(...Array.from({ length: 200 }, (_, i) => i));
  await cluster.waitEmpty();
  return outputs;
}
