/**
 * The taskchain at the type level: what each task takes and gives, worked out from the functions and
 * classes themselves, so that `setup` can refuse a chain whose tasks do not fit together and type
 * `feed`, `outputHandler` and `process()` by it. Nothing here exists at run time.
 */
import type { TaskRunOptions } from "./task-options.ts";

/**
 * One task of a taskchain as the user writes it in `setup`: a function, a class with `process(item)`
 * built once per worker with `args`, or `"package#export"` (typed `unknown` in and out).
 */
export interface TaskDefinition extends TaskRunOptions {
  // biome-ignore lint/complexity/noBannedTypes: any function or class; setup works out and checks its shape
  function: Function | string;
  /** The task gives many outputs. Defaults to true for a generator function (or `process` method). */
  isGenerator?: boolean;
  /** Constructor arguments for a class task; plain data (MessagePack). */
  args?: readonly unknown[];
}

/** `true` for `any` alone: it fits every check, so it gets none. */
type IsAny<T> = 0 extends 1 & T ? true : false;

/** What a task calls per item: the function itself, or a class's `process` method. */
type Callee<F> = F extends abstract new (
  ...args: never
) => infer Instance
  ? Instance extends { process: infer Process }
    ? Process
    : never
  : F;

/** The item a task takes: its first parameter (`unknown` when it takes none or cannot be told). */
type TakenBy<F> =
  IsAny<F> extends true
    ? unknown
    : Callee<F> extends (...args: infer Params) => unknown
      ? Params extends readonly []
        ? unknown
        : Params[0]
      : unknown;

/** What a task's call returns, as the worker sees it (an awaited promise). */
type Returned<F> = IsAny<F> extends true ? unknown : Callee<F> extends (...args: never) => infer R ? R : unknown;

/** The outputs of one call giving one output: `null`, `undefined` (or nothing) drop the item. */
type OneOutput<R> = Exclude<Awaited<R>, null | undefined | void>;

/** The outputs of one call giving many: the elements of the (async) iterable; `null`/`undefined` give none. */
type ManyOutputs<R> =
  Awaited<R> extends infer Result
    ? Result extends Iterable<infer Element> | AsyncIterable<infer Element>
      ? Element
      : never
    : never;

/** What an `isGenerator` task must return: an iterable object or async iterable of `Gives`, or nothing (a drop). */
export type ManyReturn<Gives = unknown> = (object & (Iterable<Gives> | AsyncIterable<Gives>)) | Dropped;

/** What a task returns to drop its item. */
type Dropped = null | undefined | void;

/** A generator function (or `process` method) gives many outputs without being told. */
type IsGeneratorCall<R> = [R] extends [Generator<unknown, unknown, never> | AsyncGenerator<unknown, unknown, never>]
  ? true
  : false;

/** Whether the entry's task gives many outputs: as marked, else as its function is. */
type GivesMany<E> = E extends { isGenerator: true }
  ? true
  : E extends { isGenerator: false }
    ? false
    : E extends { isGenerator: boolean }
      ? boolean
      : E extends { function: infer F }
        ? IsGeneratorCall<Returned<F>>
        : false;

/** The item a taskchain entry takes. */
export type TaskInputOf<E> = E extends { function: infer F } ? (F extends string ? unknown : TakenBy<F>) : unknown;

/** The outputs a taskchain entry gives (each one, for a task giving many). */
export type TaskOutputOf<E> = E extends { function: infer F }
  ? F extends string
    ? unknown
    : IsAny<Returned<F>> extends true
      ? unknown
      : GivesMany<E> extends true
        ? ManyOutputs<Returned<F>>
        : GivesMany<E> extends false
          ? OneOutput<Returned<F>>
          : ManyOutputs<Returned<F>> | OneOutput<Returned<F>>
  : unknown;

/** The items a whole taskchain takes: its first task's. A chain that is not a tuple takes `unknown`. */
export type ChainInput<Chain> = Chain extends readonly [infer First, ...unknown[]] ? TaskInputOf<First> : unknown;

/** The outputs a whole taskchain gives: its last task's. A chain that is not a tuple gives `unknown`. */
export type ChainOutput<Chain> = Chain extends readonly [...unknown[], infer Last] ? TaskOutputOf<Last> : unknown;

/** A task taking `Given` and giving one `Gives` (or `null` / `undefined`: a drop), or a promise of it. */
export type TaskTaking<Given, Gives = unknown> = (item: Given) => Gives | Dropped | PromiseLike<Gives | Dropped>;

/** A task taking `Given` and giving many `Gives`: an iterable or async iterable of them (or a promise of one). */
export type GeneratorTaking<Given, Gives = unknown> = (
  item: Given,
) => ManyReturn<Gives> | PromiseLike<ManyReturn<Gives>>;

/** A task call fit for its place: taking what comes, returning what its `isGenerator` says (and `Gives`). */
type CallTaking<Given, Gives, E> = GivesMany<E> extends true ? GeneratorTaking<Given, Gives> : TaskTaking<Given, Gives>;

/** What `args` on a function task gets instead of a type: the reason it is wrong. */
export type ArgsOfAFunction =
  "args are a class task's constructor arguments; a function task is called with the item alone";

/** A function task fit for its place: `Call`, and no `args`. */
type FunctionEntry<Call> = { function: Call; isGenerator?: boolean; args?: ArgsOfAFunction } & TaskRunOptions;

/** A class task fit for its place, with `args` for its constructor. */
type ClassEntry<C extends abstract new (...args: never) => unknown, Given, Gives, E> = {
  function: abstract new (...args: never) => { process: CallTaking<Given, Gives, E> };
  isGenerator?: boolean;
} & TaskRunOptions &
  ([] extends ConstructorParameters<C>
    ? { args?: Readonly<ConstructorParameters<C>> }
    : { args: Readonly<ConstructorParameters<C>> });

/**
 * The shape entry `E` must have where it stands, given what the task before it gives (`Given`;
 * `unknown` checks nothing) and, for the last task of a root declared with its outputs, what it must
 * give (`Gives`): a function takes one item (extra parameters get nothing: `args` are for
 * classes), a class has `process(item)` and gets its constructor's `args`, and an `isGenerator` task
 * returns an iterable. A type error on an entry says which of these it breaks.
 */
type Fitting<E, Given, Gives> = E extends { function: infer F }
  ? IsAny<F> extends true
    ? E
    : [F] extends [abstract new (...args: never) => unknown]
      ? ClassEntry<F, Unchecked<Given>, Gives, E>
      : [F] extends [(...args: never) => unknown]
        ? FunctionEntry<CallTaking<Unchecked<Given>, Gives, E>>
        : E // "package#export", or a plain `Function` (or a mix): nothing to check
  : E;

/** `any` where nothing is known of what comes (any first parameter fits), else what comes. */
// biome-ignore lint/suspicious/noExplicitAny: the one type every parameter accepts; `unknown` is accepted by none
type Unchecked<Given> = unknown extends Given ? any : Given;

/**
 * Each entry checked against its place in the chain: what it must be, given what the one before gives
 * (the first one, what the root is fed: `In`); the last one must give `Out`. Entries that are not a
 * tuple are checked alone.
 */
export type CheckedChain<Chain, In = unknown, Out = unknown> = Chain extends readonly []
  ? Chain
  : Chain extends readonly [infer E, ...infer Rest]
    ? readonly [Fitting<E, In, Rest extends readonly [] ? Out : unknown>, ...CheckedChain<Rest, TaskOutputOf<E>, Out>]
    : Chain extends readonly (infer E)[]
      ? readonly Fitting<E, unknown, unknown>[]
      : Chain;

/** What a value that cannot travel to a node is checked against: the reason, where a type would be. */
export interface CannotTravel<What extends string> {
  readonly "pcluster: this cannot travel to a node (items are MessagePack data)": What;
}

/** Values carried as themselves, whole (see the README's "What an item may be"). */
type Plain = string | number | boolean | bigint | null | undefined | Date | RegExp | ArrayBuffer | ArrayBufferView;

/**
 * `T` itself when it can travel to a node as it is, else `T` with each part that cannot (a function,
 * a symbol, a Map, a promise, an Error) replaced by the reason; a Set travels when its members do. The
 * codec refuses the same at run time (`ItemEncodeError`), and also what a type cannot show: class
 * instances, circular structures. `unknown` and `any` cannot be told, and pass.
 */
export type Travelling<T> = unknown extends T
  ? T
  : T extends Plain
    ? T
    : T extends (...args: never) => unknown
      ? CannotTravel<"a function">
      : T extends symbol
        ? CannotTravel<"a symbol">
        : T extends ReadonlyMap<unknown, unknown>
          ? CannotTravel<"a Map (send a plain object, or an array of pairs)">
          : T extends ReadonlySet<infer Member>
            ? ReadonlySet<Travelling<Member>> & T
            : T extends PromiseLike<unknown>
              ? CannotTravel<"a promise (await it first)">
              : T extends Error
                ? CannotTravel<"an Error (send its message)">
                : { [K in keyof T]: Travelling<T[K]> };

/** Each of the items `feed` is given, checked by `Travelling`. */
export type TravellingItems<Items extends readonly unknown[]> = { [K in keyof Items]: Travelling<Items[K]> };

// ---- combiners ----------------------------------------------------------------------------------

/** What `"sum-by-key"` stands for where the chain's outputs are not `{ [key]: number }`: the reason. */
type SumByKeyRefused = "sum-by-key (its outputs must be { [key]: number })";

/**
 * What setup's `combine` may be for a chain giving `Out`: `"count"`; `"sum-by-key"` when every field of
 * the outputs is a number; a class whose `add` takes the outputs (its `result()` is the total); or a
 * `"package#export"` name, which checks nothing. Where the outputs are `unknown`, any of them.
 */
export type CombineFor<Out> =
  | "count"
  | (unknown extends Out
      ? "sum-by-key"
      : [Out] extends [{ readonly [K in keyof Out]: number }]
        ? "sum-by-key"
        : SumByKeyRefused)
  | { function: string; args?: readonly unknown[] }
  | {
      function: abstract new (
        ...args: never
      ) => { add: (output: Unchecked<Out>) => unknown; merge(other: never): unknown; result(): unknown };
      args?: readonly unknown[];
    };

/**
 * setup's options as far as a combiner class's `args` go: typed by its constructor, and needed when it
 * has parameters that are not optional. (Apart from `combine` itself, so that a union of combiners is
 * still inferred whole.)
 */
export type CombinerArgs<Combine> = [Combine] extends [{ function: abstract new (...args: infer Args) => unknown }]
  ? { combine?: [] extends Args ? { args?: Readonly<Args> } : { args: Readonly<Args> } }
  : unknown;

/**
 * What `run()` and `result()` give with `combine`: a count, the sums per key, or the class's `result()`;
 * `undefined` without a combiner; `unknown` for a combiner named by a string.
 */
export type CombineResult<Combine> = [Combine] extends [undefined]
  ? undefined
  : Combine extends "count"
    ? number
    : Combine extends "sum-by-key"
      ? Record<string, number>
      : Combine extends { function: abstract new (...args: never) => { result(): infer Result } }
        ? Result
        : unknown;
