/**
 * One input item as its worker runs it: where its record is, what it is labelled with, how many
 * outputs it gave. It is the chain's hooks for that item (ChainHooks): every output, error and share
 * it writes carries its id, so items in progress at once never mix.
 */
import { encode, encodeTransient } from "../../protocol/codec.ts";
import { ItemTooLargeError } from "../../errors.ts";
import { ItemOutputs, type WorkerPartial } from "./partial.ts";
import {
  RECORD_HEADER_BYTES,
  RecordKind,
  recordFlags,
  recordId,
  recordLength,
  recordStage,
} from "../../protocol/record.ts";
import type { ByteRing } from "../ring.ts";
import { FLAG_ALONE, FLAG_OVERSIZE, SHARE_TARGET_SHIFT } from "../worker-messages.ts";
import type { ShareRotation } from "./fan-out-sharing.ts";
import type { InProgressItems } from "./in-progress.ts";
import type { OutputWriter } from "./output-writer.ts";
import type { ChainHooks, ResolvedTask } from "./taskchain.ts";

const MAX_REPORT_CHARS = 16_000;

/** What every item of one worker shares. */
export interface RunContext {
  tasks: ResolvedTask[];
  output: OutputWriter;
  rotation: ShareRotation;
  /** The bound on items in progress, when the worker runs several at once (else undefined). */
  inProgress: InProgressItems | undefined;
  /** Whether a large fan-out may be handed to idle workers (off for exactly-once roots and combiners). */
  shareFanOut: boolean;
  /** With a combiner: the worker's partial; an item's outputs are held beside it until it is finished. */
  partial: WorkerPartial | undefined;
}

/** A TaskError record's payload; a string `error` is a report of pcluster's own, without a stack. */
export function errorReport(task: Pick<ResolvedTask, "name">, error: unknown): Uint8Array {
  const message = error instanceof Error ? error.message : String(error);
  const stack = error instanceof Error ? error.stack : undefined;
  return encode({
    task: task.name,
    message: message.slice(0, MAX_REPORT_CHARS),
    stack: stack?.slice(0, MAX_REPORT_CHARS),
  });
}

export class ItemRun implements ChainHooks {
  /** Input position of its record, and of the record after it. */
  position = 0;
  next = 0;
  offset = 0;
  stage = 0;
  flags = 0;
  id = 0;
  length = 0;
  outputs = 0;
  /** Outputs it gave, sent or not (naming one that cannot be sent: `outputs[2]`). */
  given = 0;
  /** With a combiner: its outputs, folded into the worker's partial once it is finished (`takeOutputs`). */
  #outputs: ItemOutputs | undefined;
  /** Its Done is written (`finished`), then committed: from then on its input bytes may be given back. */
  finished = false;
  committed = false;
  /** Its place in the shared table of items in progress (-1: none, e.g. parked for a retry). */
  place = -1;

  constructor(readonly context: RunContext) {}

  /** Takes the record at `at` of `input` (not a Void one) as this run's item; returns where the next one starts. */
  begin(input: ByteRing, at: number): number {
    const offset = input.offsetOf(at);
    const view = input.view;
    input.markRunning(at);
    this.position = at;
    this.offset = offset;
    this.stage = recordStage(view, offset);
    this.flags = recordFlags(view, offset);
    this.id = recordId(view, offset);
    this.length = recordLength(view, offset);
    this.outputs = 0;
    this.given = 0;
    this.#outputs = undefined;
    this.next = (at + RECORD_HEADER_BYTES + this.length) >>> 0;
    return this.next;
  }

  /** The flags every record about the item carries: its own, less how its input travelled and ran. */
  get itemFlags(): number {
    return this.flags & ~(FLAG_OVERSIZE | FLAG_ALONE);
  }

  /** Whether it must run with no other item in progress (it was in progress when its worker died). */
  get alone(): boolean {
    return (this.flags & FLAG_ALONE) !== 0;
  }

  emit(value: unknown): void | Promise<void> {
    const partial = this.context.partial;
    if (partial !== undefined) {
      (this.#outputs ??= new ItemOutputs(partial)).add(value);
      this.outputs++;
      return;
    }
    try {
      const writing = this.context.output.writeValue(
        RecordKind.Output,
        0,
        this.itemFlags,
        this.id,
        value,
        this.#outputName,
      );
      this.outputs++;
      if (this.place >= 0) this.context.inProgress!.table.touch(this.place);
      return writing;
    } catch (error) {
      // An output that cannot be carried as itself (ItemEncodeError, naming the path) is this item's
      // TaskError; the item's other outputs and the worker go on.
      const last = this.context.tasks.length - 1;
      const why =
        error instanceof ItemTooLargeError ? error : `an output could not be sent: ${(error as Error).message}`;
      return this.writeError(last, errorReport(this.context.tasks[last]!, why));
    } finally {
      this.given++;
    }
  }

  /** Its outputs (with a combiner), handed over once: it is finished (undefined: it gave none). */
  takeOutputs(): ItemOutputs | undefined {
    const outputs = this.#outputs;
    this.#outputs = undefined;
    return outputs;
  }

  /** Names the output being written, for an ItemEncodeError. */
  readonly #outputName = (): string => `outputs[${this.given}]`;

  taskError(stage: number, error: unknown): void | Promise<void> {
    return this.writeError(stage, errorReport(this.context.tasks[stage]!, error));
  }

  writeError(stage: number, report: Uint8Array): void | Promise<void> {
    return this.context.output.write(RecordKind.TaskError, stage, this.itemFlags, this.id, report);
  }

  /** Hands a fan-out sub-item to a hungry worker this one claimed; false: run it here. */
  tryShare(item: unknown, stage: number): boolean {
    if (!this.context.shareFanOut) return false;
    const target = this.context.rotation.next();
    if (target < 0) return false;
    let bytes: Uint8Array;
    try {
      bytes = encodeTransient(item); // copied into the ring at once
    } catch {
      return false; // a sub-item that cannot be carried as itself runs here, where it needs no encoding
    }
    const flags = this.itemFlags | ((target + 1) << SHARE_TARGET_SHIFT);
    // When the output ring is full the engine is behind anyway: run this one here.
    return this.context.output.tryWrite(RecordKind.Share, stage, flags, this.id, bytes);
  }

  /** An async task call of this item finished: it is not stuck. */
  progressed(): void {
    if (this.place >= 0) this.context.inProgress!.table.touch(this.place);
  }

  park(): void {
    this.context.inProgress!.park(this);
  }

  resume(): void | Promise<void> {
    return this.context.inProgress!.resume(this);
  }
}
