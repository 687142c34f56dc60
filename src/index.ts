/**
 * pcluster's public surface: the root that drives a cluster, `log` for tasks and scripts, and the
 * typed errors. Everything else is internal.
 *
 * @example
 * import { Root } from "pcluster";
 * import { double } from "./task_package";
 *
 * await using cluster = await Root.local({ nodes: 2 });
 * await cluster.setup("example", "1.0", [{ function: double }], { localPackages: ["./task_package"], outputHandler: console.log });
 * cluster.feed(1, 2, 3);
 * await cluster.waitEmpty();
 */
export {
  type Log,
  type LogAddress,
  type LogOptions,
  closeLogs,
  flushLogs,
  getDefaultLogAddress,
  log,
  setDefaultLogAddress,
  setLogToken,
} from "./log/log.ts";
export {
  AuthError,
  ConnectionClosedError,
  ItemTooLargeError,
  ListenError,
  NameLookupError,
  ItemEncodeError,
  NoNodesError,
  NodeBusyError,
  PclusterError,
  ProtocolError,
  QueueFullError,
  SetupError,
  StateError,
  TaskError,
  TimeoutError,
  VersionMismatchError,
} from "./errors.ts";
export type { HttpEndpoint } from "./metrics/endpoint.ts";
export type { RecentError } from "./metrics/recent-errors.ts";
export type { HostPort } from "./protocol/address.ts";
/** What a taskchain (a tuple: `as const`) takes and gives, as `setup` works them out. */
export type { ChainInput, ChainOutput, CombineFor, CombineResult } from "./root/chain-types.ts";
export type { DashboardOptions } from "./root/dashboard/server.ts";
export type { RootObservation } from "./root/observation.ts";
export type { NodeStatus, TaskStats } from "./protocol/pipeline.ts";
export {
  type LocalOptions,
  type NodeReport,
  type Progress,
  Root,
  type RootOptions,
  type RunOptions,
  type SetupOptions,
  type TaskDefinition,
} from "./root/root.ts";
export type { ProgressOptions } from "./root/options.ts";
export type { CombineOption } from "./root/options.ts";
export { VERSION } from "./version.ts";
