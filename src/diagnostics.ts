import type { ConsolaInstance } from "consola";

/**
 * consola, which pcluster's parts print their diagnostics through, loaded on first use: loading it
 * costs a process about 50 ms of CPU, and a node or log server prints nothing through it unless
 * something needs saying. Sixteen local nodes starting at once on two cores feel that.
 *
 * @example
 * diagnostics().warn("pcluster: something worth knowing");
 */
export function diagnostics(): ConsolaInstance {
  loaded ??= (require("consola") as typeof import("consola")).consola;
  return loaded;
}

let loaded: ConsolaInstance | undefined;
