/** The thread of `wordCountLoopInFreshThread` (wordcount-loop.ts): reads the documents, then times a loop per "go". */
import { documents } from "./documents.ts";
import { type LoopRun, wordCountLoop } from "./wordcount-loop.ts";

const port = globalThis as unknown as {
  onmessage: ((event: MessageEvent<"go">) => void) | null;
  postMessage(message: "ready" | LoopRun): void;
};
const docs = documents();
port.onmessage = () => {
  const started = performance.now();
  const cpuBefore = process.cpuUsage(); // the whole process's: the bench's thread idles meanwhile
  const totals = wordCountLoop(docs);
  const cpu = process.cpuUsage(cpuBefore);
  port.postMessage({
    seconds: (performance.now() - started) / 1000,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    totals,
  });
};
port.postMessage("ready");
