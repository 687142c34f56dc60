// Type tests, checked by `bun run typecheck` (tsc over test/), never run: each `@ts-expect-error`
// line must fail to typecheck (tsc reports a directive with nothing to suppress), every other line
// must pass, and `same<A, B>()` holds only when A and B are the same type.
import { type ChainInput, type ChainOutput, Root, type TaskDefinition, type TaskError } from "pcluster";

/** Compiles only when `Actual` and `Expected` are exactly the same type. */
function same<Actual, Expected>(..._proof: Same<Actual, Expected> extends true ? [] : [never]): void {}
type Same<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
/** The item and output types of a root. */
type InOf<R> = R extends Root<infer In, unknown> ? In : never;
type OutOf<R> = R extends Root<never, infer Out> ? Out : never;

// ---- tasks of every kind ------------------------------------------------------------------------

declare function parse(line: string): { id: number; text: string };
declare function fetchTitle(record: { id: number; text: string }): Promise<string | null>;
declare function words(text: string): Generator<string, void, unknown>;
declare function wordsLater(text: string): AsyncGenerator<{ word: string }>;
declare function splitToArray(text: string): string[];
declare function streamOf(text: string): AsyncIterable<number>;
declare function sometimes(n: number): number | undefined;
declare function logOnly(n: number): void;
declare function byId(record: { id: number }): number;
declare function twoItems(a: string, b: string): string;
declare function noInput(): string;
declare function length(text: string): number;
declare function half(n: number): number;

class Tagger {
  constructor(
    readonly stopWords: string[],
    readonly options: { min: number },
  ) {}
  process(word: string): { word: string; tags: string[] } | null {
    return this.stopWords.includes(word) ? null : { word, tags: [] };
  }
}
class Counter {
  process(word: { word: string }): number {
    return word.word.length;
  }
}
class Repeater {
  constructor(readonly times?: number) {}
  *process(word: string): Generator<string> {
    yield word;
  }
}
class NoProcess {
  run(item: string): string {
    return item;
  }
}

declare const cluster: Root;

// ---- what setup infers --------------------------------------------------------------------------

// sync, async (null dropped), generator function: string → { id, text } → string → each word
const titles = await cluster.setup("t", 1, [{ function: parse }, { function: fetchTitle }, { function: words }]);
same<InOf<typeof titles>, string>();
same<OutOf<typeof titles>, string>();

// an async generator, and a class with process(item) built with its constructor's args
const tagged = await cluster.setup("t", 1, [{ function: wordsLater }, { function: Counter }, { function: half }]);
same<InOf<typeof tagged>, string>();
same<OutOf<typeof tagged>, number>();

// isGenerator over a function returning an array, or an async iterable: their elements
const letters = await cluster.setup("t", 1, [
  { function: splitToArray, isGenerator: true },
  { function: Tagger, args: [["the", "a"], { min: 2 }] },
]);
same<OutOf<typeof letters>, { word: string; tags: string[] }>();
const numbers = await cluster.setup("t", 1, [{ function: streamOf, isGenerator: true }]);
same<OutOf<typeof numbers>, number>();
// without isGenerator, an array is one output
const arrays = await cluster.setup("t", 1, [{ function: splitToArray }]);
same<OutOf<typeof arrays>, string[]>();

// a class whose process is a generator gives many; its optional constructor argument may be left out
const repeated = await cluster.setup("t", 1, [{ function: Repeater }]);
same<OutOf<typeof repeated>, string>();
await cluster.setup("t", 1, [{ function: Repeater, args: [3] }]);

// null, undefined and void are drops, not outputs
const maybe = await cluster.setup("t", 1, [{ function: sometimes }]);
same<OutOf<typeof maybe>, number>();
const silent = await cluster.setup("t", 1, [{ function: logOnly }]);
same<OutOf<typeof silent>, never>();

// a task taking nothing takes anything
const anything = await cluster.setup("t", 1, [{ function: noInput }]);
same<InOf<typeof anything>, unknown>();

// "package#export" is unknown in and out; the chain is checked around it
const named = await cluster.setup("t", 1, [{ function: "tasks#parse" }, { function: byId }]);
same<InOf<typeof named>, unknown>();
same<OutOf<typeof named>, number>();

// a taskchain kept in a variable is typed as a tuple with `as const`, and unknown without
const kept = [{ function: parse }, { function: byId }] as const;
same<OutOf<Awaited<ReturnType<typeof cluster.setup<typeof kept>>>>, number>();
same<ChainInput<typeof kept>, string>();
same<ChainOutput<typeof kept>, number>();
const loose = [{ function: parse }, { function: byId }];
const untyped = await cluster.setup("t", 1, loose);
same<InOf<typeof untyped>, unknown>();

// code written before the types flowed keeps compiling: TaskDefinition[], Function, args on a class
const definitions: TaskDefinition[] = [{ function: parse }, { function: Tagger as Function, args: [[], { min: 1 }] }];
const asBefore = await cluster.setup("t", 1, definitions, { outputHandler: (output: unknown) => output });
same<OutOf<typeof asBefore>, unknown>();

// ---- outputHandler, errorHandler, feed, feedMany, run, process ------------------------------------

await cluster.setup("t", 1, [{ function: parse }, { function: byId }], {
  outputHandler: (id) => same<typeof id, number>(),
  errorHandler: (error) => {
    same<typeof error, TaskError<string>>(); // the chain takes strings…
    same<typeof error.input, string | undefined>(); // …and the input the error descends from is one
  },
});
await cluster.setup("t", 1, [{ function: parse }, { function: byId }], {
  // @ts-expect-error the chain gives numbers
  outputHandler: (id: string) => id,
});

const pipeline = await cluster.setup("t", 1, [{ function: parse }, { function: fetchTitle }]);
pipeline.feed("1:a", "2:b");
await pipeline.feedAsync("3:c");
pipeline.feedMany(["4:d"]);
pipeline.feedMany(new Set(["5:e"]));
await pipeline.run(["6:f"]);
await pipeline.run(
  (async function* () {
    yield "7:g";
  })(),
);
for await (const title of pipeline.process(["8:h"])) same<typeof title, string>();
// @ts-expect-error the chain takes lines
pipeline.feed(1);
// @ts-expect-error the chain takes lines
pipeline.feedMany([1, 2]);
// @ts-expect-error the chain takes lines
await pipeline.run([{ id: 1 }]);
// @ts-expect-error the chain takes lines
pipeline.process([true]);

// ---- what cannot travel -------------------------------------------------------------------------

cluster.feed(1, "two", { three: [3], at: new Date() }, new Uint8Array(4), null, [true]);
const opaque: unknown = 1;
cluster.feed(opaque);
// @ts-expect-error a function cannot travel
cluster.feed(() => 1);
// @ts-expect-error a function cannot travel, even beside a bigint (which does)
cluster.feed(() => 1, 10n);
// @ts-expect-error a symbol cannot travel
cluster.feed(Symbol("s"));
// @ts-expect-error a Map cannot travel (send a plain object)
cluster.feed(new Map([[1, 2]]));
// @ts-expect-error a Set travels only when its members do
cluster.feedMany([new Set([() => 1])]);
// @ts-expect-error a method of an object cannot travel
await cluster.feedAsync({ id: 1, describe: () => "one" });
// What the codec carries as itself travels: bigints, Sets, typed arrays, RegExps, undefined.
cluster.feed(10n, new Set([1, 2]), new Float64Array([1.5]), /x/g, undefined, [undefined]);
// @ts-expect-error an Error cannot travel (send its message)
cluster.feed({ failed: new Error("x") });
cluster.feed(Buffer.from("a Buffer is a Uint8Array"));
// @ts-expect-error a promise is awaited first
await cluster.run([Promise.resolve(1)]);

// ---- chains that do not fit ---------------------------------------------------------------------

// @ts-expect-error task 2 expects { id: number } but task 1 gives a string
await cluster.setup("t", 1, [{ function: noInput }, { function: byId }]);
// @ts-expect-error a generator's elements are what the next task takes: strings, not records
await cluster.setup("t", 1, [{ function: words }, { function: byId }]);
// @ts-expect-error a class's process takes what comes: Counter takes { word }, not a string
await cluster.setup("t", 1, [{ function: words }, { function: Counter }]);
// @ts-expect-error a class task needs its constructor's args
await cluster.setup("t", 1, [{ function: Tagger }]);
// @ts-expect-error ... of the right types
await cluster.setup("t", 1, [{ function: Tagger, args: [["the"], { min: "2" }] }]);
// @ts-expect-error args are for classes: a function is called with the item alone
await cluster.setup("t", 1, [{ function: parse, args: ["x"] }]);
// @ts-expect-error a task is called with one item: a second parameter would get nothing
await cluster.setup("t", 1, [{ function: twoItems }]);
// @ts-expect-error isGenerator wants an iterable back, not a number
await cluster.setup("t", 1, [{ function: length, isGenerator: true }]);
// @ts-expect-error a class task has process(item)
await cluster.setup("t", 1, [{ function: NoProcess }]);

// ---- combiners: what the chain gives must fit, and run() / result() give the total ---------------

declare function countWords(line: string): Record<string, number>;
declare function tally(line: string): { lines: number; words: number };
declare class Longest {
  add(word: string): void;
  merge(other: Longest): void;
  result(): string;
}
declare class TopN {
  constructor(n: number);
  add(word: string): void;
  merge(other: TopN): void;
  result(): string[];
}
const summed = await cluster.setup("t", 1, [{ function: countWords }], { combine: "sum-by-key" });
same<Awaited<ReturnType<typeof summed.run>>, Record<string, number>>();
const summedSoFar = summed.result();
same<typeof summedSoFar, Record<string, number>>();
await cluster.setup("t", 1, [{ function: tally }], { combine: "sum-by-key" }); // every field a number
// @ts-expect-error sum-by-key sums numbers per key: these outputs hold strings
await cluster.setup("t", 1, [{ function: parse }], { combine: "sum-by-key" });
const counted = await cluster.setup("t", 1, [{ function: parse }], { combine: "count" });
same<Awaited<ReturnType<typeof counted.run>>, number>();
const longest = await cluster.setup("t", 1, [{ function: words }], { combine: { function: Longest } });
const longestSoFar = longest.result();
same<typeof longestSoFar, string>();
// @ts-expect-error Longest adds strings; parse gives records
await cluster.setup("t", 1, [{ function: parse }], { combine: { function: Longest } });
const top = await cluster.setup("t", 1, [{ function: words }], { combine: { function: TopN, args: [10] } });
same<Awaited<ReturnType<typeof top.run>>, string[]>();
// @ts-expect-error TopN is built with a number
await cluster.setup("t", 1, [{ function: words }], { combine: { function: TopN, args: ["10"] } });
// @ts-expect-error TopN needs its args
await cluster.setup("t", 1, [{ function: words }], { combine: { function: TopN } });
const namedCombiner = await cluster.setup("t", 1, [{ function: words }], { combine: { function: "tasks#Longest" } });
const namedSoFar = namedCombiner.result();
same<typeof namedSoFar, unknown>();
declare const either: boolean;
const mixed = await cluster.setup("t", 1, [{ function: countWords }], {
  combine: either ? "sum-by-key" : "count",
});
same<Awaited<ReturnType<typeof mixed.run>>, Record<string, number> | number>();
// without a combiner run() resolves to undefined; a chain of names may be summed (nothing to check)
same<Awaited<ReturnType<typeof titles.run>>, undefined>();
const byName = await cluster.setup("t", 1, [{ function: "tasks#countWords" }], { combine: "sum-by-key" });
same<Awaited<ReturnType<typeof byName.run>>, Record<string, number>>();
// a root used untyped gives what it always gave
same<Awaited<ReturnType<typeof cluster.run>>, unknown>();

// ---- declared roots, and typed roots where a Root is expected -------------------------------------

const declared = new Root<string, number>([]);
declared.feed("a");
// @ts-expect-error declared to take strings
declared.feed(1);
await declared.setup("t", 1, [{ function: length }]);
// @ts-expect-error declared to take strings: the first task must take them
await declared.setup("t", 1, [{ function: byId }]);
// @ts-expect-error declared to give numbers: the last task must give them
await declared.setup("t", 1, [{ function: parse }]);
const declaredWords = new Root<string, string>([]);
await declaredWords.setup("t", 1, [{ function: words }]);
await declaredWords.setup("t", 1, [{ function: splitToArray, isGenerator: true }]);
// @ts-expect-error declared to give strings: this generator gives { word } records
await declaredWords.setup("t", 1, [{ function: wordsLater }]);
// @ts-expect-error ... and this class's process gives numbers
await declaredWords.setup("t", 1, [{ function: wordsLater }, { function: Counter }]);
// a chain of names takes its types from the declaration
const declaredNamed = await declared.setup("t", 1, [{ function: "tasks#length" }]);
same<InOf<typeof declaredNamed>, string>();
same<OutOf<typeof declaredNamed>, number>();

const local = await Root.local<{ id: number }, string>({ nodes: 1 });
local.feed({ id: 1 });
function takesAnyRoot(root: Root): string[] {
  return root.nodes;
}
takesAnyRoot(pipeline);
takesAnyRoot(local);
