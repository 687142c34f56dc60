// Shipped to the nodes by bench/start.bench.ts: a task package as users write them, importing `log`
// from "pcluster" (so every Worker thread loads pcluster's public surface with it).
import { log } from "pcluster";

/** Returns its item; logs only an item that asks to be logged (none in the bench). */
export function identityLogging<T>(item: T): T {
  if (item === "log me") log(`${item}`);
  return item;
}
