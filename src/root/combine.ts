import { SetupError } from "../errors.ts";
import {
  BUILT_IN_COMBINERS,
  type BuiltInCombiner,
  type Combiner,
  type CombinerClass,
  builtInCombiner,
  combinerProblem,
  mergePartial,
} from "../protocol/combiners.ts";
import type { TaskSpec } from "../protocol/pipeline.ts";
import type { CombineOption } from "./options.ts";
import { type LocalPackage, resolveCombiner } from "./packager.ts";

/** A combiner as the root runs it: what the nodes are told, and the class the root merges with. */
export interface ResolvedCombiner {
  spec: TaskSpec | BuiltInCombiner;
  type: CombinerClass;
  args: unknown[];
}

export async function resolveCombine(
  option: CombineOption | undefined,
  packages: LocalPackage[],
): Promise<ResolvedCombiner | undefined> {
  if (option === undefined) return undefined;
  if (typeof option === "string") {
    if (!(BUILT_IN_COMBINERS as readonly string[]).includes(option)) {
      throw new TypeError(
        `setup option combine must be ${BUILT_IN_COMBINERS.map((name) => `"${name}"`).join(" or ")}, ` +
          `or { function: SomeClass, args }; got ${Bun.inspect(option)}`,
      );
    }
    return { spec: option, type: builtInCombiner(option), args: [] };
  }
  if (option === null || typeof option !== "object") {
    const got = Bun.inspect(option);
    throw new TypeError(`setup option combine must be a built-in's name or { function, args }, got ${got}`);
  }
  const { spec, value } = await resolveCombiner(option.function as Function | string, option.args, packages);
  const problem = combinerProblem(value);
  if (problem !== undefined) {
    const where = `the combiner ("${spec.package}#${spec.export}")`;
    throw new SetupError(`${where}: ${problem}; a combiner has add(output), merge(other) and result()`);
  }
  return { spec, type: value as CombinerClass, args: spec.args ?? [] };
}

/** The root's total: every partial the nodes ship, merged (with the same class) as it arrives. */
export class CombinedTotal {
  readonly #combiner: ResolvedCombiner;
  readonly #total: Combiner;

  constructor(combiner: ResolvedCombiner) {
    this.#combiner = combiner;
    this.#total = new combiner.type(...combiner.args);
  }

  /** Merges a shipped partial; returns how many outputs it folded. */
  merge(bytes: Uint8Array, start: number, end: number): number {
    return mergePartial(this.#total, this.#combiner.type, bytes, start, end);
  }

  result(): unknown {
    return this.#total.result();
  }
}
