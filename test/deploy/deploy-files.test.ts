import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseInvocation } from "../../src/cli/program.ts";
import { program } from "../../src/cli.ts";
import { NODE_ALLOCATOR_ENV } from "../../src/node/allocator.ts";
import { DEFAULT_DRAIN_TIMEOUT_MS } from "../../src/node/server.ts";

/** A stop's grace (seconds) leaves a node time to finish its items (its drain) and stop. */
function outlastsTheDrain(graceSeconds: number): void {
  expect(graceSeconds * 1000).toBeGreaterThanOrEqual(DEFAULT_DRAIN_TIMEOUT_MS + 5000);
}
import { REPO } from "../support/processes.ts";

/**
 * The files in deploy/ cannot be run here (no container engine, no systemd, no Kubernetes), so they
 * are read: each parses, every `pcluster` command line in them is one the CLI accepts, the nodes
 * listen beyond loopback only with the token, and the token comes from the environment or a Secret.
 */

const DEPLOY = join(REPO, "deploy");
const read = (path: string) => readFileSync(join(DEPLOY, path), "utf8");
type Doc = Record<string, any>;

/** Parses `argv` as `pcluster argv` would: unknown flags or bad values throw a UsageError. */
function accepted(argv: readonly string[]) {
  expect(() => parseInvocation(program, argv)).not.toThrow();
  return parseInvocation(program, argv).values as Record<string, unknown>;
}

/** A node listening on 0.0.0.0 on the port given; the token is not on the command line. */
function expectDeployedNode(argv: readonly string[], port = 6000) {
  expect(argv[0]).toBe("node");
  const flags = accepted(argv);
  expect(flags).toMatchObject({ host: "0.0.0.0", port, insecure: false });
  expect(argv).not.toContain("--token");
  expect(argv).not.toContain("--insecure");
  return flags;
}

describe("Dockerfile", () => {
  const text = read("Dockerfile");
  const json = (instruction: string): string[] =>
    JSON.parse(new RegExp(`^${instruction} (\\[.*\\])$`, "m").exec(text)![1]!);

  test("is based on the official oven/bun image and copies only files that exist", () => {
    expect(text.match(/^FROM (\S+)/gm)).toEqual(["FROM oven/bun:1", "FROM oven/bun:1"]);
    for (const line of text.match(/^COPY (?!--from)(.*) \S+$/gm)!) {
      for (const file of line
        .replace(/^COPY /, "")
        .split(" ")
        .slice(0, -1))
        expect(existsSync(join(REPO, file))).toBe(true);
    }
  });

  test("runs `pcluster node` on 0.0.0.0 with the token from the environment, as a user, checked by status", () => {
    expect(json("ENTRYPOINT")).toEqual(["bun", "src/cli.ts"]);
    expectDeployedNode(json("CMD"));
    expect(text).toMatch(/^USER bun$/m);
    const health = json("HEALTHCHECK --interval=30s --timeout=10s CMD");
    expect(health.slice(0, 2)).toEqual(["bun", "src/cli.ts"]);
    expect(accepted(health.slice(2))).toMatchObject({ nodes: ["127.0.0.1:6000"] });
  });

  test("sets the node's allocator variables, so that the node need not restart itself for them", () => {
    const env = Object.fromEntries(
      [...text.matchAll(/^ENV (.*)$/gm)].flatMap((line) => line[1]!.split(/\s+/).map((pair) => pair.split("="))),
    );
    expect(env).toMatchObject(NODE_ALLOCATOR_ENV);
  });
});

describe("compose.yaml", () => {
  const compose = Bun.YAML.parse(read("compose.yaml")) as Doc;
  const services = compose.services as Record<string, Doc>;

  test("a log server and three nodes, each a command the CLI accepts, all with the token from the environment", () => {
    expect(Object.keys(services).sort()).toEqual(["log", "node-1", "node-2", "node-3"]);
    const log = accepted(services.log!.command);
    expect(services.log!.command[0]).toBe("log");
    expect(log).toMatchObject({ host: "0.0.0.0", port: 5000 });
    const published = new Set<string>();
    for (const name of ["node-1", "node-2", "node-3"]) {
      const node = services[name]!;
      expect(expectDeployedNode(node.command)).toMatchObject({ "log-host": "log", "log-port": 5000 });
      expect(node.depends_on).toEqual(["log"]);
      expect(node.build).toEqual({ context: "..", dockerfile: "deploy/Dockerfile" });
      published.add(node.ports[0]);
      outlastsTheDrain(Number(/^(\d+)s$/.exec(node.stop_grace_period)![1]));
    }
    expect([...published].sort()).toEqual(["127.0.0.1:6001:6000", "127.0.0.1:6002:6000", "127.0.0.1:6003:6000"]);
    for (const service of Object.values(services)) {
      expect(service.environment.PCLUSTER_TOKEN).toMatch(/^\$\{PCLUSTER_TOKEN:\?/);
    }
  });
});

describe("systemd unit", () => {
  const unit = read("pcluster-node.service");

  test("starts `pcluster node` with flags the CLI accepts and the token from an environment file", () => {
    const exec = /^ExecStart=(.*)$/m.exec(unit)![1]!.split(/\s+/);
    expect(exec.slice(0, 2)).toEqual(["/usr/local/bin/bun", "/opt/pcluster/src/cli.ts"]);
    expectDeployedNode(exec.slice(2));
    expect(unit).toMatch(/^EnvironmentFile=\/etc\/pcluster\/node\.env$/m);
    expect(unit).toMatch(/^StateDirectory=pcluster$/m);
    expect(unit).toMatch(/^KillSignal=SIGTERM$/m);
    outlastsTheDrain(Number(/^TimeoutStopSec=(\d+)$/m.exec(unit)![1]));
    for (const section of ["[Unit]", "[Service]", "[Install]"]) expect(unit).toContain(section);
  });

  test("sets the node's allocator variables, so that the node need not restart itself for them", () => {
    const env = Object.fromEntries(
      [...unit.matchAll(/^Environment=(.*)$/gm)].flatMap((line) =>
        line[1]!.split(/\s+/).map((pair) => pair.split("=")),
      ),
    );
    expect(env).toMatchObject(NODE_ALLOCATOR_ENV);
  });
});

describe("Kubernetes manifests", () => {
  const docs = (file: string) => {
    const parsed = Bun.YAML.parse(read(`kubernetes/${file}`));
    return (Array.isArray(parsed) ? parsed : [parsed]) as Doc[];
  };
  const all = [...docs("nodes.yaml"), ...docs("log-server.yaml")];
  const find = (kind: string, name: string) => all.find((doc) => doc.kind === kind && doc.metadata.name === name)!;
  const container = (workload: Doc) => workload.spec.template.spec.containers[0];
  const tokenFromSecret = {
    name: "PCLUSTER_TOKEN",
    valueFrom: { secretKeyRef: { name: "pcluster-token", key: "token" } },
  };

  test("a headless Service in front of a StatefulSet of nodes, the token from a Secret", () => {
    const service = find("Service", "pcluster-nodes");
    const nodes = find("StatefulSet", "pcluster-node");
    expect(service.spec.clusterIP).toBe("None");
    expect(nodes.spec.serviceName).toBe("pcluster-nodes");
    expect(service.spec.selector).toEqual(nodes.spec.template.metadata.labels);
    expect(nodes.spec.selector.matchLabels).toEqual(nodes.spec.template.metadata.labels);
    const node = container(nodes);
    const flags = expectDeployedNode(node.args);
    outlastsTheDrain(nodes.spec.template.spec.terminationGracePeriodSeconds);
    expect(service.spec.ports[0]).toMatchObject({ port: flags.port, targetPort: "node" });
    expect(node.ports).toEqual([{ name: "node", containerPort: flags.port }]);
    expect(node.env).toContainEqual(tokenFromSecret);
    // The probe is a `pcluster status` the CLI accepts, against the node's own port.
    const probe = node.readinessProbe.exec.command as string[];
    expect(accepted(probe.slice(2))).toMatchObject({ nodes: [`127.0.0.1:${flags.port}`] });
    // The nodes log to the log server's Service, on its port.
    const log = find("Service", "pcluster-log");
    expect(flags["log-host"]).toBe(log.metadata.name);
    expect(flags["log-port"]).toBe(log.spec.ports[0].port);
  });

  test("a log server Deployment behind its Service, the token from the same Secret", () => {
    const service = find("Service", "pcluster-log");
    const deployment = find("Deployment", "pcluster-log");
    expect(service.spec.selector).toEqual(deployment.spec.template.metadata.labels);
    const log = container(deployment);
    expect(log.args[0]).toBe("log");
    expect(accepted(log.args)).toMatchObject({ host: "0.0.0.0", port: 5000 });
    expect(log.env).toContainEqual(tokenFromSecret);
    expect(all.map((doc) => doc.apiVersion)).toEqual(expect.arrayContaining(["v1", "apps/v1"]));
    expect(all.some((doc) => doc.kind === "Secret")).toBe(false); // made with kubectl, never committed
  });
});
