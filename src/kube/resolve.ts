import { UsageError } from "../errors.ts";
import type { ForwardRequest } from "../spec/request.ts";
import type { PortSpec } from "../spec/ports.ts";
import { type Address, formatAddress, parseAddress } from "../protocol/addr.ts";
import type { KubeReader } from "./client.ts";
import { PodTracker } from "./pods.ts";
import {
  type Container,
  type Pod,
  selectorString,
  type Service,
  type ServicePort,
  type Workload,
} from "./types.ts";

/** Where one relayed connection goes. */
export interface Destination {
  address: Address;
  port: number;
  /** The pod chosen, for messages. */
  pod?: string;
}

/** A target resolved against the cluster: gives the destination of each new connection. */
export interface ResolvedTarget {
  /** What `Forwarding from … -> X` shows for a port. */
  remoteLabel(spec: PortSpec): string;
  /** The destination for a new connection on that port (may wait for a ready pod). */
  destination(spec: PortSpec): Promise<Destination>;
  /** A connection to `dest` was refused: prefer other pods for a while. */
  reportFailure(dest: Destination): void;
  /**
   * True if the pod of `dest` declares that port (a container port of that protocol): a refused
   * connection then usually means a server listening only on the pod's localhost.
   */
  declaresPort?(dest: Destination, protocol: "tcp" | "udp"): boolean;
  /**
   * Calls `onGone` once the pod of `dest` stops serving (deleted, not Ready, replaced; a pod that
   * is terminating but still Ready is not gone yet, as for kube-proxy's UDP conntrack entries); at
   * once (asynchronously) if it is gone now. Returns a function that cancels the watch. Absent
   * where destinations do not follow pods (ip/, host/, a Service's cluster IP or external name).
   */
  watchPod?(dest: Destination, onGone: () => void): () => void;
  /** Stops watching pods. */
  stop(): void;
}

/** Options for resolveTarget. */
export interface ResolveOptions {
  podRunningTimeoutMs: number;
  log: (line: string) => void;
  /**
   * `--direct`: every destination is a pod (its name given), also for a Service with a cluster
   * IP (a pod of its selector, on the target port, as `kubectl port-forward svc/x` does).
   */
  direct?: boolean;
}

const WORKLOAD_PATHS: Record<string, [string, string]> = {
  deployment: ["apis/apps/v1", "deployments"],
  statefulset: ["apis/apps/v1", "statefulsets"],
  replicaset: ["apis/apps/v1", "replicasets"],
  daemonset: ["apis/apps/v1", "daemonsets"],
  job: ["apis/batch/v1", "jobs"],
};

function numericPort(spec: PortSpec, what: string): number {
  if (typeof spec.remote === "number") return spec.remote;
  throw new UsageError(
    `named port "${spec.remote}" cannot be used with ${what}: give a port number`,
  );
}

/** Finds a container port by name (and protocol) among containers. */
function containerPortByName(
  containers: Container[],
  name: string,
  spec: PortSpec,
): number | undefined {
  const proto = spec.protocol.toUpperCase();
  for (const c of containers) {
    for (const p of c.ports ?? []) {
      if (p.name === name && (p.protocol ?? "TCP") === proto) return p.containerPort;
    }
  }
  for (const c of containers) {
    for (const p of c.ports ?? []) if (p.name === name) return p.containerPort;
  }
  return undefined;
}

/** Follows the ready pods of a query and maps a port spec to pod IP + container port. */
function podTarget(
  client: KubeReader,
  namespace: string,
  query: string,
  what: string,
  portOf: (spec: PortSpec, pod: Pod) => number,
  label: (spec: PortSpec) => string,
  opts: ResolveOptions,
): ResolvedTarget & { tracker: PodTracker } {
  const tracker = new PodTracker(client, namespace, query, {
    log: opts.log,
    onChange: (from, to) => {
      if (from && to) {
        opts.log(
          `Pod ${from.metadata.name} is gone or not ready; new connections go to ${to.metadata.name}`,
        );
      }
    },
  });
  return {
    tracker,
    remoteLabel: label,
    async destination(spec) {
      const pod = await tracker.readyPod(opts.podRunningTimeoutMs);
      if (!pod) {
        throw new Error(`timed out waiting for a ready pod of ${what} (--pod-running-timeout)`);
      }
      return {
        address: parseAddress(pod.status!.podIP!),
        port: portOf(spec, pod),
        pod: pod.metadata.name,
      };
    },
    reportFailure: (dest) => {
      if (dest.pod) tracker.avoid(dest.pod, 5000);
    },
    watchPod: (dest, onGone) =>
      dest.pod ? tracker.whenGone(dest.pod, formatAddress(dest.address), onGone) : () => {},
    declaresPort: (dest, protocol) => {
      const pod = tracker.pods.find((p) => p.metadata.name === dest.pod);
      return (pod?.spec.containers ?? []).some((c) =>
        (c.ports ?? []).some((p) =>
          p.containerPort === dest.port && (p.protocol ?? "TCP") === protocol.toUpperCase()
        )
      );
    },
    stop: () => tracker.stop(),
  };
}

/** Checks that a ready pod shows up within the timeout, with kubectl's wording when it does not. */
async function waitFirstPod(
  t: { tracker: PodTracker },
  what: string,
  timeoutMs: number,
): Promise<Pod> {
  await t.tracker.start();
  const pod = await t.tracker.readyPod(timeoutMs);
  if (!pod) {
    t.tracker.stop();
    const known = t.tracker.pods;
    const detail = known.length === 0
      ? "no pods found"
      : `pod ${known[0].metadata.name} is ${known[0].status?.phase ?? "Pending"}`;
    throw new UsageError(`timed out waiting for a running, ready pod of ${what} (${detail})`);
  }
  return pod;
}

function servicePort(svc: Service, spec: PortSpec): ServicePort {
  const ports = svc.spec.ports ?? [];
  const found = typeof spec.remote === "number"
    ? ports.find((p) => p.port === spec.remote)
    : ports.find((p) => p.name === spec.remote);
  if (!found) {
    if (typeof spec.remote === "number" && ports.length === 0 && svc.spec.type === "ExternalName") {
      return { port: spec.remote };
    }
    const what = typeof spec.remote === "number"
      ? `service port ${spec.remote}`
      : `service port named "${spec.remote}"`;
    throw new UsageError(`Service ${svc.metadata.name} does not have a ${what}`);
  }
  return found;
}

function containerPortResolver(what: string) {
  return (spec: PortSpec, pod: Pod): number => {
    if (typeof spec.remote === "number") return spec.remote;
    const n = containerPortByName(pod.spec.containers, spec.remote, spec);
    if (n === undefined) {
      throw new Error(
        `Pod ${pod.metadata.name} of ${what} does not have a port named "${spec.remote}"`,
      );
    }
    return n;
  };
}

/** Resolves a `TYPE/NAME` + ports to a ResolvedTarget, checking names and ports up front. */
export async function resolveTarget(
  client: KubeReader,
  req: ForwardRequest,
  namespace: string,
  opts: ResolveOptions,
): Promise<ResolvedTarget> {
  const { kind, name } = req.target;
  const ns = encodeURIComponent(namespace);
  const fixed = (address: Address, what: string): ResolvedTarget => {
    req.ports.forEach((p) => numericPort(p, what));
    return {
      remoteLabel: (spec) => String(spec.remote),
      destination: (spec) => Promise.resolve({ address, port: numericPort(spec, what) }),
      reportFailure() {},
      stop() {},
    };
  };
  if (opts.direct && (kind === "ip" || kind === "host")) {
    throw new UsageError(`--direct reaches pods only; ${kind}/ targets need the agent`);
  }
  switch (kind) {
    case "ip":
      return fixed(parseAddress(name), "ip/ targets");
    case "host":
      return fixed({ type: "hostname", name }, "host/ targets");
    case "pod": {
      await client.get<Pod>(`/api/v1/namespaces/${ns}/pods/${encodeURIComponent(name)}`);
      const what = `pod/${name}`;
      const t = podTarget(
        client,
        namespace,
        `fieldSelector=${encodeURIComponent(`metadata.name=${name}`)}`,
        what,
        containerPortResolver(what),
        (spec) => String(spec.remote),
        opts,
      );
      const pod = await waitFirstPod(t, what, opts.podRunningTimeoutMs);
      req.ports.forEach((p) => containerPortResolver(what)(p, pod));
      return t;
    }
    case "service": {
      const svc = await client.get<Service>(
        `/api/v1/namespaces/${ns}/services/${encodeURIComponent(name)}`,
      );
      req.ports.forEach((p) => servicePort(svc, p));
      const clusterIP = svc.spec.clusterIP;
      if (opts.direct && (!svc.spec.selector || Object.keys(svc.spec.selector).length === 0)) {
        throw new UsageError(
          `Service ${name} has no selector, so there is no pod to forward to: --direct cannot reach it (without --direct the agent can)`,
        );
      }
      if (clusterIP && clusterIP !== "None" && !opts.direct) {
        return {
          remoteLabel: (spec) => String(servicePort(svc, spec).port),
          destination: (spec) =>
            Promise.resolve({
              address: parseAddress(clusterIP),
              port: servicePort(svc, spec).port,
            }),
          reportFailure() {},
          stop() {},
        };
      }
      if (svc.spec.type === "ExternalName" && svc.spec.externalName && !opts.direct) {
        const host = svc.spec.externalName.replace(/\.$/, "");
        return {
          remoteLabel: (spec) => String(servicePort(svc, spec).port),
          destination: (spec) =>
            Promise.resolve({
              address: { type: "hostname", name: host },
              port: servicePort(svc, spec).port,
            }),
          reportFailure() {},
          stop() {},
        };
      }
      if (!svc.spec.selector || Object.keys(svc.spec.selector).length === 0) {
        throw new UsageError(`Service ${name} has no cluster IP, no external name and no selector`);
      }
      const what = `service/${name}`;
      const portOf = (spec: PortSpec, pod: Pod): number => {
        const sp = servicePort(svc, spec);
        const target = sp.targetPort ?? sp.port;
        if (typeof target === "number") return target;
        if (/^\d+$/.test(target)) return Number(target);
        const n = containerPortByName(pod.spec.containers, target, spec);
        if (n === undefined) {
          throw new Error(`Pod ${pod.metadata.name} does not have a port named "${target}"`);
        }
        return n;
      };
      const t = podTarget(
        client,
        namespace,
        `labelSelector=${encodeURIComponent(selectorString({ matchLabels: svc.spec.selector }))}`,
        what,
        portOf,
        (spec) => String(servicePort(svc, spec).targetPort ?? servicePort(svc, spec).port),
        opts,
      );
      const pod = await waitFirstPod(t, what, opts.podRunningTimeoutMs);
      req.ports.forEach((p) => portOf(p, pod));
      return t;
    }
    default: {
      const [api, plural] = WORKLOAD_PATHS[kind];
      const w = await client.get<Workload>(
        `/${api}/namespaces/${ns}/${plural}/${encodeURIComponent(name)}`,
      );
      const what = `${kind}/${name}`;
      if (!w.spec.selector) throw new UsageError(`${what} has no pod selector`);
      const containers = w.spec.template?.spec?.containers ?? [];
      for (const p of req.ports) {
        if (
          typeof p.remote === "string" && containerPortByName(containers, p.remote, p) === undefined
        ) {
          throw new UsageError(`${what} does not have a container port named "${p.remote}"`);
        }
      }
      const t = podTarget(
        client,
        namespace,
        `labelSelector=${encodeURIComponent(selectorString(w.spec.selector))}`,
        what,
        containerPortResolver(what),
        (spec) =>
          String(
            typeof spec.remote === "number"
              ? spec.remote
              : containerPortByName(containers, spec.remote, spec),
          ),
        opts,
      );
      await waitFirstPod(t, what, opts.podRunningTimeoutMs);
      return t;
    }
  }
}
