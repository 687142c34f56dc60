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
  type LogAddress,
  closeLogs,
  flushLogs,
  getDefaultLogAddress,
  log,
  setDefaultLogAddress,
  setLogToken,
} from "./log/client.ts";
export {
  AuthError,
  ConnectionClosedError,
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
export type { HostPort } from "./protocol/address.ts";
export type { NodeStatus, TaskStatsRecord as TaskStats } from "./protocol/pipeline.ts";
export {
  type LocalOptions,
  type NodeReport,
  type Progress,
  Root,
  type RootOptions,
  type SetupOptions,
  type TaskDefinition,
} from "./root/root.ts";
export { VERSION } from "./version.ts";
