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
 * A worker's partial: the outputs of an item being run wait beside it (in its ItemRun) and are folded
 * in only once the item is finished (`fold`), so that what is shipped (`take`, right before a Done
 * record) covers exactly the items of that Done — never part of an item whose worker may still die on it.
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
    this.#partial = this.#fresh();
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

  /** An item is finished: folds its outputs in; returns the error `add` threw, if any. */
  fold(held: readonly unknown[]): unknown {
    if (held.length === 0) return undefined;
    try {
      for (const output of held) this.#partial.add(output);
    } catch (error) {
      return error;
    } finally {
      this.folded += held.length;
    }
    return undefined;
  }

  /** The partial as bytes, to ship (undefined: nothing was folded in); a fresh one takes its place. */
  take(): Uint8Array | undefined {
    if (this.folded === 0) return undefined;
    const bytes = encodePartial(this.#partial, this.folded);
    this.#partial = this.#fresh();
    this.folded = 0;
    return bytes;
  }

  #fresh(): Combiner {
    try {
      return new this.type(...this.args);
    } catch (error) {
      throw new SetupError(`constructing the combiner "${this.type.name}" failed: ${(error as Error).message}`);
    }
  }
}
