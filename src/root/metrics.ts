import { type HttpEndpoint, type ListenOptions, serveMetricsText } from "../metrics/http.ts";
import { MetricsText, type Sample } from "../metrics/prometheus.ts";
import type { RootObservation } from "./observation.ts";

type NodeLaneView = RootObservation["nodes"][number];

/**
 * The root's metrics in the Prometheus text format: its counts since setup (a new setup starts them
 * at 0, a counter reset to Prometheus), its queue, and each node's window and round trip.
 */
export function rootMetricsText({ progress, nodes }: RootObservation): string {
  const perNode = (value: (node: NodeLaneView) => number | null): Sample[] =>
    nodes.flatMap((node) => {
      const sample = value(node);
      return sample === null ? [] : [{ labels: { node: node.address }, value: sample }];
    });
  const seconds = (ms: number | null): number | null => (ms === null ? null : ms / 1000);
  return new MetricsText()
    .counter("pcluster_root_items_fed_total", "Items fed to the root.", progress.fed)
    .counter("pcluster_root_items_done_total", "Items finished, with all they generated.", progress.done)
    .counter("pcluster_root_items_resent_total", "Items re-sent because their node was lost.", progress.resent)
    .counter("pcluster_root_outputs_total", "Outputs handed to the output handler.", progress.outputs)
    .counter("pcluster_root_task_errors_total", "Task errors and items given up.", progress.errors)
    .gauge("pcluster_root_items_queued", "Items waiting at the root.", progress.queued)
    .gauge("pcluster_root_items_in_flight", "Items sent to nodes and not finished.", progress.inFlight)
    .gauge("pcluster_root_nodes", "Nodes the pipeline runs on.", nodes.length)
    .gauge(
      "pcluster_root_node_workers",
      "A node's workers.",
      perNode((node) => node.workers),
    )
    .gauge(
      "pcluster_root_node_idle_workers",
      "Idle workers a node reported last.",
      perNode((n) => n.idleWorkers),
    )
    .gauge(
      "pcluster_root_node_window_items",
      "Items a node may have in flight now.",
      perNode((node) => node.window),
    )
    .gauge(
      "pcluster_root_node_in_flight_items",
      "Items in flight on a node.",
      perNode((node) => node.inFlight),
    )
    .gauge(
      "pcluster_root_node_in_flight_bytes",
      "Bytes in flight on a node.",
      perNode((node) => node.inFlightBytes),
    )
    .gauge(
      "pcluster_root_node_round_trip_seconds",
      "The last timed item's time from sent to done on a node.",
      perNode((node) => seconds(node.roundTripMs)),
    )
    .gauge(
      "pcluster_root_node_min_round_trip_seconds",
      "The fastest item round trip seen on a node (creeping up slowly).",
      perNode((node) => seconds(node.minRoundTripMs)),
    )
    .toString();
}

/** Serves `GET /metrics` from a fresh observation on every scrape. */
export function serveRootMetrics(observe: () => RootObservation, options: ListenOptions): HttpEndpoint {
  return serveMetricsText("root", () => rootMetricsText(observe()), options);
}
