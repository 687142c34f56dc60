import { join } from "node:path";
import { Root } from "../../src/index.ts";
import { sleepy } from "../fixtures/tasks/index.ts";
import { REPO } from "./processes.ts";

/**
 * Runs 300 items through the node at argv[2] with `run(items, { progress: { label: "rows" } })`, so the
 * bar goes to stderr; the progress test runs this under `script`, which makes stderr a terminal.
 * Prints "RAN <done>" when the run is over.
 */
const cluster = new Root([process.argv[2]!]);
try {
  const localPackages = [join(REPO, "test/fixtures/tasks")];
  await cluster.setup("progress-tty", "1", [{ function: sleepy }], { localPackages });
  await cluster.run(
    Array.from({ length: 300 }, (_, id) => ({ id, ms: 2 })),
    { progress: { label: "rows" } },
  );
  console.log(`RAN ${cluster.progress.done}`);
} finally {
  await cluster.close();
}
