/**
 * The task functions every bench runs, the same code for pcluster's engine, piscina, a plain loop and a
 * whole cluster, so that only the way items reach them differs. A package folder: cluster.bench.ts ships
 * it to the nodes with `localPackages` (so it imports nothing from outside this folder).
 */
export interface Item {
  id: number;
  payload: string;
}

export function identity(item: Item): Item {
  return item;
}

export function enrich(item: Item): Item & { n: number } {
  return { id: item.id, payload: item.payload, n: item.id * 2 };
}

export function duplicate<T>(item: T): T[] {
  return [item, item];
}

export function measure(item: Item & { n: number }): { id: number; length: number; n: number } {
  return { id: item.id, length: item.payload.length, n: item.n };
}

/** Busy CPU for `ms` milliseconds (default 10), then returns the item. */
export function spin(item: number | { ms?: number }): unknown {
  const ms = typeof item === "object" && item !== null && item.ms !== undefined ? item.ms : 10;
  const end = performance.now() + ms;
  while (performance.now() < end);
  return item;
}

/** Waits 20 ms, as a fetch or a query would, then gives the item back: an I/O-bound task. */
export async function wait20<T>(item: T): Promise<T> {
  await Bun.sleep(20);
  return item;
}

/** The 3-stage chain (enrich → duplicate → measure), for piscina and the plain loop. */
export function chain(item: Item): Array<{ id: number; length: number; n: number }> {
  return duplicate(enrich(item)).map(measure);
}

export function makeItems(count: number): Item[] {
  const payload = "p".repeat(64);
  return Array.from({ length: count }, (_, id) => ({ id, payload }));
}

/** A latency-bound task that costs no CPU: blocks its thread for `ms` (default 2) in `Atomics.wait`. */
export function blockingWait(item: number | { ms?: number }): unknown {
  const ms = typeof item === "object" && item !== null && item.ms !== undefined ? item.ms : 2;
  Atomics.wait(parkingWord, 0, 0, ms);
  return item;
}
const parkingWord = new Int32Array(new SharedArrayBuffer(4));

/** An I/O-bound task (a fetch, a query): waits `ms` (default 20) without holding its thread. */
export async function asyncWait(item: number | { ms?: number }): Promise<unknown> {
  const ms = typeof item === "object" && item !== null && item.ms !== undefined ? item.ms : 20;
  await Bun.sleep(ms);
  return item;
}

/** Takes the item and gives nothing: for benches of the way in alone. */
export function discard(_item: unknown): null {
  return null;
}
