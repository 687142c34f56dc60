import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Engine, type EngineOptions } from "../../src/node/engine/engine.ts";
import { RecordBatchBuilder, decode, encode } from "../../src/protocol/codec.ts";
import { RecordKind, RecordReader, forEachDone } from "../../src/protocol/record.ts";
import type { TaskSpec } from "../../src/protocol/pipeline.ts";

/** Writes a task package (files by relative path) into a fresh temp folder; returns the folder. */
export function writeTaskPackage(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), "pcluster-tasks-"));
  for (const [path, text] of Object.entries(files)) writeFileSync(join(dir, path), text);
  return dir;
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

export interface ErrorRecord {
  id: number;
  stage: number;
  kind: "error" | "failed";
  task: string;
  message: string;
  stack?: string;
}

/**
 * Drives an `Engine` in-process the way the node server does: encodes items into feed blobs, and
 * decodes the result records it hands out. Outputs are kept unless `keepOutputs` is false.
 */
export class EngineHarness {
  readonly outputs: Array<{ id: number; value: unknown }> = [];
  readonly done: number[] = [];
  /** How many outputs each finished item gave, as its Done said. */
  readonly outputsOf = new Map<number, number>();
  readonly errors: ErrorRecord[] = [];
  /** Why each worker that died went down, in order. */
  readonly deaths: string[];
  outputCount = 0;
  outputBytes = 0;
  #nextId = 1;
  keepOutputs = true;
  /** Called with each result batch before it is decoded (e.g. to slow the consumer down). */
  onBatch: ((records: Uint8Array) => void) | undefined;

  private constructor(
    readonly engine: Engine,
    deaths: string[],
  ) {
    this.deaths = deaths;
  }

  static async start(
    dir: string,
    tasks: Array<Partial<TaskSpec> & { export: string }>,
    options: EngineOptions = {},
  ): Promise<EngineHarness> {
    let harness: EngineHarness | undefined;
    const pending: Uint8Array[] = [];
    const deaths: string[] = [];
    const specs = tasks.map((task) => ({ package: "tasks", isGenerator: false, ...task }));
    const engine = await Engine.start(specs, { tasks: join(dir, "index.ts") }, options, {
      onResults(batch) {
        // Read in place (the engine clears the batch after this call); keep a copy only for results
        // that come before the harness exists.
        if (harness === undefined) pending.push(batch.takeRecords());
        else harness.#take(batch.records());
      },
      onWorkerDied(_worker, reason) {
        deaths.push(reason);
      },
    });
    harness = new EngineHarness(engine, deaths);
    for (const records of pending) harness.#take(records);
    return harness;
  }

  /** Feeds items (starting at task `stage`); returns their ids. */
  feed(items: unknown[], stage = 0): number[] {
    const batch = new RecordBatchBuilder();
    const ids: number[] = [];
    for (const item of items) {
      const id = this.#nextId++;
      ids.push(id);
      batch.append(RecordKind.Input, stage, 0, id, encode(item));
    }
    this.engine.dispatch(batch.takeRecords());
    return ids;
  }

  /** Waits (bounded) until the engine is empty. */
  async waitEmpty(timeoutMs = 30_000): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([
        this.engine.whenEmpty(),
        new Promise((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`engine not empty after ${timeoutMs} ms (in flight: ${this.engine.inFlight})`)),
            timeoutMs,
          );
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  values(): unknown[] {
    return this.outputs.map((output) => output.value);
  }

  #take(records: Uint8Array): void {
    this.onBatch?.(records);
    const reader = new RecordReader(records);
    while (reader.next()) {
      switch (reader.kind) {
        case RecordKind.Output:
          this.outputCount++;
          this.outputBytes += reader.payloadEnd - reader.payloadStart;
          if (this.keepOutputs)
            this.outputs.push({ id: reader.id, value: decode(records, reader.payloadStart, reader.payloadEnd) });
          break;
        case RecordKind.Done:
          forEachDone(records, reader.payloadStart, reader.payloadEnd, (id, outputs) => {
            this.done.push(id);
            this.outputsOf.set(id, outputs);
          });
          break;
        case RecordKind.TaskError:
        case RecordKind.Failed: {
          const report = decode(records, reader.payloadStart, reader.payloadEnd) as ErrorRecord;
          this.errors.push({
            ...report,
            id: reader.id,
            stage: reader.stage,
            kind: reader.kind === RecordKind.Failed ? "failed" : "error",
          });
          break;
        }
      }
    }
  }
}
