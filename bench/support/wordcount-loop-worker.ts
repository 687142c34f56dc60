/**
 * The thread of `wordCountLoopInFreshThread` and `wordCountHalvesInFreshThreads` (wordcount-loop.ts):
 * reads the documents, then times a loop over them (or over one half of them) per message.
 */
import { documents } from "./documents.ts";
import { documentHalves, type LoopPart, type LoopRun, wordCountLoop } from "./wordcount-loop.ts";

const port = globalThis as unknown as {
  onmessage: ((event: MessageEvent<LoopPart>) => void) | null;
  postMessage(message: "ready" | LoopRun): void;
};
const docs = documents();
const halves = documentHalves(docs);
port.onmessage = (event) => {
  const part = event.data === "all" ? docs : halves[event.data];
  const started = performance.now();
  const cpuBefore = process.cpuUsage(); // the whole process's: the bench's thread idles meanwhile
  const totals = wordCountLoop(part);
  const cpu = process.cpuUsage(cpuBefore);
  port.postMessage({
    seconds: (performance.now() - started) / 1000,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    totals,
  });
};
port.postMessage("ready");
