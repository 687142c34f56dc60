import { SetupError } from "../../errors.ts";
import {
  type BuiltInCombiner,
  type Combiner,
  type CombinerClass,
  builtInCombiner,
  combinerProblem,
  encodePartial,
} from "../../protocol/combiners.ts";
import type { TaskSpec } from "../../protocol/pipeline.ts";
import { importExport } from "./taskchain.ts";

const COMBINER_NEEDS = "a combiner has add(output), merge(other) and result()";

/**
 * A worker's partial: the outputs of an item being run wait beside it (in its ItemRun: its ItemOutputs)
 * and are folded in only once the item is finished (`fold`), so that what is shipped (`take`, right
 * before a Done record) covers exactly the items of that Done — never part of an item whose worker may
 * still die on it.
 */
export class WorkerPartial {
  #partial: Combiner;
  /** Outputs folded in since the last `take`. */
  folded = 0;

  private constructor(
    readonly type: CombinerClass,
    readonly args: unknown[],
    readonly name: string,
  ) {
    this.#partial = this.fresh();
  }

  /** The combiner of `spec`: a built-in, or a class a shipped package exports. */
  static async load(spec: TaskSpec | BuiltInCombiner, entries: Record<string, string>): Promise<WorkerPartial> {
    if (typeof spec === "string") return new WorkerPartial(builtInCombiner(spec), [], spec);
    const where = `the combiner ("${spec.package}#${spec.export}")`;
    const type = await importExport(spec, entries, where);
    const problem = combinerProblem(type);
    if (problem !== undefined) throw new SetupError(`${where}: ${problem}; ${COMBINER_NEEDS}`);
    return new WorkerPartial(type as CombinerClass, spec.args ?? [], spec.export);
  }

  /** An item is finished: folds its outputs in; returns the error a combiner threw on them, if any. */
  fold(item: ItemOutputs): unknown {
    if (item.count === 0) return undefined;
    this.folded += item.count;
    let error = item.error;
    if (item.partial !== undefined) {
      try {
        this.#partial.merge(item.partial);
      } catch (thrown) {
        error ??= thrown;
      }
    }
    return error ?? addAll(this.#partial, item.held);
  }

  /** The partial as bytes, to ship (undefined: nothing was folded in); a fresh one takes its place. */
  take(): Uint8Array | undefined {
    if (this.folded === 0) return undefined;
    const bytes = encodePartial(this.#partial, this.folded);
    this.#partial = this.fresh();
    this.folded = 0;
    return bytes;
  }

  /** A fresh partial: the worker's next, or one for the outputs of an item with many (see ItemOutputs). */
  fresh(): Combiner {
    try {
      return new this.type(...this.args);
    } catch (error) {
      throw new SetupError(`constructing the combiner "${this.type.name}" failed: ${(error as Error).message}`);
    }
  }
}

/** Adds `outputs` to `partial`, in order; returns the error `add` threw, if any (the outputs after it are not added). */
function addAll(partial: Combiner, outputs: readonly unknown[]): unknown {
  try {
    for (const output of outputs) partial.add(output);
  } catch (error) {
    return error;
  }
  return undefined;
}

/**
 * Outputs an item gathers past this many are folded at once, into a partial of the item's own (merged
 * into the worker's when the item is finished): an item with a fan-out of millions then holds its
 * partial, not its outputs, and they die young instead of living until the item's end.
 */
const HELD_OUTPUTS = 256;

/** The outputs of one item being run, with a combiner: held, or folded into a partial of its own once many. */
export class ItemOutputs {
  held: unknown[] = [];
  /** Its own partial, once it had many outputs. */
  partial: Combiner | undefined;
  /** What a combiner threw on one of them: the item's task error; its later outputs are not folded. */
  error: unknown;
  count = 0;

  constructor(readonly worker: WorkerPartial) {}

  add(output: unknown): void {
    this.count++;
    if (this.error !== undefined) return;
    const held = this.held;
    held.push(output);
    if (held.length < HELD_OUTPUTS) return;
    try {
      this.partial ??= this.worker.fresh();
      this.error = addAll(this.partial, held);
    } catch (error) {
      this.error = error; // its constructor threw
    }
    this.held = [];
  }
}
