/**
 * Pure helpers over Pod and Service objects for the runtime: readiness, label selectors,
 * target-port resolution, and what a pod's containers should play.
 *
 * @module
 */

import type { V1Pod, V1Service } from "@kubernetes/client-node";

export type { V1Pod, V1Service };

/** Label of the relay agent's pods. */
export const AGENT_LABEL = "app.kubernetes.io/name";
/** Value of {@link AGENT_LABEL} on agent pods. */
export const AGENT_NAME = "kubectl-relay-agent";
/** Default agent listen port (as in agent.ts). */
export const AGENT_PORT = 9527;

/** `ns/name` key of an object. */
export function keyOf(o: { metadata?: { namespace?: string; name?: string } }): string {
  return `${o.metadata?.namespace ?? ""}/${o.metadata?.name ?? ""}`;
}

/** True if the pod is being deleted (or finished: nothing to play any more). */
export function isTerminating(pod: V1Pod): boolean {
  return Boolean(pod.metadata?.deletionTimestamp);
}

/** True if the pod has finished (Succeeded/Failed). */
export function isFinished(pod: V1Pod): boolean {
  const phase = pod.status?.phase;
  return phase === "Succeeded" || phase === "Failed";
}

/** Ready condition is True, the pod is Running, has an IP and is not terminating. */
export function isReady(pod: V1Pod): boolean {
  return pod.status?.phase === "Running" && !isTerminating(pod) && Boolean(pod.status?.podIP) &&
    (pod.status?.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True");
}

/** True if the runtime should play this pod's containers now. */
export function shouldPlay(pod: V1Pod): boolean {
  return Boolean(pod.spec?.nodeName) && Boolean(pod.status?.podIP) &&
    pod.status?.phase === "Running" && !isTerminating(pod);
}

/** Equality-based selector match (Service selectors are plain maps). Empty selector = none. */
export function matchesSelector(
  labels: Record<string, string> | undefined,
  selector: Record<string, string> | undefined,
): boolean {
  if (!selector || Object.keys(selector).length === 0) return false;
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

/** True for agent pods. */
export function isAgentPod(pod: V1Pod): boolean {
  return pod.metadata?.labels?.[AGENT_LABEL] === AGENT_NAME;
}

/** Normalised protocol. */
export type Proto = "TCP" | "UDP";

/** A container port of a pod. */
export interface ContainerPort {
  container: string;
  name?: string;
  port: number;
  protocol: Proto | "SCTP";
}

/** All declared container ports of a pod. */
export function containerPorts(pod: V1Pod): ContainerPort[] {
  const out: ContainerPort[] = [];
  for (const c of pod.spec?.containers ?? []) {
    for (const p of c.ports ?? []) {
      out.push({
        container: c.name,
        name: p.name,
        port: p.containerPort,
        protocol: (p.protocol ?? "TCP") as Proto | "SCTP",
      });
    }
  }
  return out;
}

/**
 * A Service port's target on one pod: a number as is; a name looked up among the pod's
 * container ports of the same protocol. undefined if the name is not found.
 */
export function resolveTargetPort(
  pod: V1Pod,
  targetPort: number | string | undefined,
  servicePort: number,
  protocol: Proto,
): number | undefined {
  if (targetPort === undefined || targetPort === "") return servicePort;
  if (typeof targetPort === "number") return targetPort;
  if (/^\d+$/.test(targetPort)) return Number(targetPort);
  return containerPorts(pod).find((p) => p.name === targetPort && p.protocol === protocol)?.port;
}

/** Ready pods selected by a Service (same namespace), in a stable order (by name). */
export function selectedReadyPods(svc: V1Service, pods: Iterable<V1Pod>): V1Pod[] {
  const ns = svc.metadata?.namespace;
  const out: V1Pod[] = [];
  for (const p of pods) {
    if (p.metadata?.namespace !== ns) continue;
    if (!isReady(p)) continue;
    if (!matchesSelector(p.metadata?.labels, svc.spec?.selector)) continue;
    out.push(p);
  }
  return out.sort((a, b) => (a.metadata!.name! < b.metadata!.name! ? -1 : 1));
}

/** The cluster IP of a Service, or undefined if headless/ExternalName/none. */
export function clusterIPOf(svc: V1Service): string | undefined {
  const ip = svc.spec?.clusterIP;
  if (!ip || ip === "None" || svc.spec?.type === "ExternalName") return undefined;
  return ip;
}

/** How the runtime runs an agent container: see {@link agentArgs}. */
export interface AgentPlan {
  /** The agent's arguments, addresses rewritten to the pod IP. */
  args: string[];
  /** The tunnel port (`--listen`; default 9527). */
  port: number;
  /** The health port (`--health`), if the container asks for one. */
  healthPort?: number;
  /**
   * Ports the container binds to a loopback address only (`127.0.0.0/8`, `::1`, `localhost`): in
   * a real pod only the pod's own processes and the kubelet's port-forward reach them, never a
   * probe or another pod. The runtime still binds them on the pod IP (pods share the host's
   * loopback here) and fails readiness probes aimed at them, as a kubelet's would fail.
   */
  loopbackPorts: number[];
}

const isLoopbackHost = (h: string) =>
  /^127\./.test(h) || h === "::1" || h === "[::1]" || h === "localhost";

/**
 * Agent command-line arguments from the container's args (command ignored): `--listen` and
 * `--health` are replaced by `<podIP>:<port>` (the port they named; `--listen` defaults to 9527),
 * since all pods share the host's network namespace here. Other arguments are kept.
 */
export function agentArgs(args: string[] | undefined, podIP: string): AgentPlan {
  const out: string[] = [];
  let port = AGENT_PORT;
  let healthPort: number | undefined;
  let listenHost = "0.0.0.0";
  let healthHost = "0.0.0.0";
  const a = args ?? [];
  for (let i = 0; i < a.length; i++) {
    const m = /^--?(listen|health)(?:=(.*))?$/.exec(a[i]);
    if (!m) {
      out.push(a[i]);
      continue;
    }
    const value = m[2] ?? a[++i] ?? "";
    const hp = /^(?:\[([^\]]*)\]|(.*)):(\d+)$/.exec(value);
    if (!hp) continue;
    const host = hp[1] ?? hp[2];
    if (m[1] === "listen") {
      port = Number(hp[3]);
      listenHost = host;
    } else {
      healthPort = Number(hp[3]);
      healthHost = host;
    }
  }
  const loopbackPorts = [
    ...(isLoopbackHost(listenHost) ? [port] : []),
    ...(healthPort !== undefined && isLoopbackHost(healthHost) ? [healthPort] : []),
  ];
  return {
    args: [
      "--listen",
      `${podIP}:${port}`,
      ...(healthPort !== undefined ? ["--health", `${podIP}:${healthPort}`] : []),
      ...out,
    ],
    port,
    healthPort,
    loopbackPorts,
  };
}

/** What one container port is played as. */
export type PortRole = "http" | "dns" | "redis" | "echo";

/** One server to run for a pod. */
export interface PlannedServer {
  port: number;
  protocol: Proto;
  role: PortRole;
}

/**
 * How the runtime plays a non-agent pod, one entry per (port, protocol):
 * - a port named `echo*` (TCP or UDP) → echo server (TCP echoes bytes and half-close, UDP echoes
 *   datagrams); so does a TCP port of a container whose image contains "echo" (unless named
 *   `dns*`/`http*`);
 * - TCP in a container whose image contains "redis" → redis-server;
 * - TCP port named `dns*` → DNS over TCP; other TCP → HTTP;
 * - UDP → DNS (test zone), also served over TCP on the same port unless a TCP port is declared
 *   there. SCTP ports are ignored.
 */
export function portPlan(pod: V1Pod): PlannedServer[] {
  const images = new Map((pod.spec?.containers ?? []).map((c) => [c.name, c.image ?? ""]));
  const ports = containerPorts(pod);
  const out = new Map<string, PlannedServer>();
  for (const p of ports) {
    if (p.protocol !== "TCP") continue;
    const name = p.name ?? "";
    const image = images.get(p.container) ?? "";
    const role: PortRole = /^echo/i.test(name) ||
        (/echo/i.test(image) && !/^(dns|http)/i.test(name))
      ? "echo"
      : /redis/i.test(image)
      ? "redis"
      : /^dns/i.test(name)
      ? "dns"
      : "http";
    if (!out.has(`${p.port}/TCP`)) {
      out.set(`${p.port}/TCP`, { port: p.port, protocol: "TCP", role });
    }
  }
  for (const p of ports) {
    if (p.protocol !== "UDP") continue;
    const role: PortRole = /^echo/i.test(p.name ?? "") ? "echo" : "dns";
    out.set(`${p.port}/UDP`, { port: p.port, protocol: "UDP", role });
    if (!out.has(`${p.port}/TCP`)) {
      out.set(`${p.port}/TCP`, { port: p.port, protocol: "TCP", role });
    }
  }
  return [...out.values()];
}
