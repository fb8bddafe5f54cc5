import { UsageError } from "../errors.ts";

/** Kinds of target a user can name. */
export type TargetKind =
  | "pod"
  | "service"
  | "deployment"
  | "statefulset"
  | "replicaset"
  | "daemonset"
  | "job"
  | "host"
  | "ip";

/** A parsed `TYPE/NAME` argument. */
export interface TargetRef {
  kind: TargetKind;
  name: string;
  /** The argument as written. */
  text: string;
}

const ALIASES: Record<string, TargetKind> = {
  po: "pod",
  pod: "pod",
  pods: "pod",
  svc: "service",
  service: "service",
  services: "service",
  deploy: "deployment",
  deployment: "deployment",
  deployments: "deployment",
  sts: "statefulset",
  statefulset: "statefulset",
  statefulsets: "statefulset",
  rs: "replicaset",
  replicaset: "replicaset",
  replicasets: "replicaset",
  ds: "daemonset",
  daemonset: "daemonset",
  daemonsets: "daemonset",
  job: "job",
  jobs: "job",
  host: "host",
  ip: "ip",
};

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const HOST_LABEL = /^[A-Za-z0-9_]([-A-Za-z0-9_]*[A-Za-z0-9_])?$/;

/** True if `s` is a dotted-quad IPv4 address. */
export function isIPv4(s: string): boolean {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  return m !== null && m.slice(1).every((p) => Number(p) <= 255 && String(Number(p)) === p);
}

/** True if `s` is a textual IPv6 address (optionally with an embedded IPv4 tail). */
export function isIPv6(s: string): boolean {
  if (!s.includes(":") || !/^[0-9A-Fa-f:.]+$/.test(s)) return false;
  let text = s;
  let extra = 0;
  const lastColon = text.lastIndexOf(":");
  const tail = text.slice(lastColon + 1);
  if (tail.includes(".")) {
    if (!isIPv4(tail)) return false;
    text = text.slice(0, lastColon + 1) + "0:0";
    extra = 0;
  }
  const halves = text.split("::");
  if (halves.length > 2) return false;
  const groups = (h: string) => (h === "" ? [] : h.split(":"));
  const all = halves.flatMap(groups);
  if (!all.every((g) => /^[0-9A-Fa-f]{1,4}$/.test(g))) return false;
  const count = all.length + extra;
  return halves.length === 2 ? count <= 7 : count === 8;
}

/** True if `s` is a hostname the agent can resolve (RFC 1123 labels, ≤ 253 bytes). */
export function isValidHostname(s: string): boolean {
  const name = s.endsWith(".") ? s.slice(0, -1) : s;
  if (name.length === 0 || name.length > 253) return false;
  return name.split(".").every((l) => l.length <= 63 && HOST_LABEL.test(l));
}

/** Parses `TYPE/NAME` (or a bare pod name) as `kubectl relay` accepts it. */
export function parseTarget(text: string): TargetRef {
  const slash = text.indexOf("/");
  if (slash < 0) {
    if (!DNS_SUBDOMAIN.test(text)) {
      throw new UsageError(`invalid pod name "${text}"`);
    }
    return { kind: "pod", name: text, text };
  }
  const type = text.slice(0, slash);
  const name = text.slice(slash + 1);
  const kind = ALIASES[type.toLowerCase()];
  if (!kind) {
    throw new UsageError(
      `the server doesn't have a resource type "${type}" (supported: pod, svc, deploy, sts, rs, ds, job, host, ip)`,
    );
  }
  if (name === "") {
    throw new UsageError(`arguments in resource/name form must have a single resource and name`);
  }
  if (kind === "ip") {
    const bare = name.startsWith("[") && name.endsWith("]") ? name.slice(1, -1) : name;
    if (!isIPv4(bare) && !isIPv6(bare)) {
      throw new UsageError(`invalid IP address "${name}"`);
    }
    return { kind, name: bare, text };
  }
  if (kind === "host") {
    if (!isValidHostname(name)) throw new UsageError(`invalid hostname "${name}"`);
    return { kind, name, text };
  }
  const valid = kind === "service" ? DNS_LABEL.test(name) : DNS_SUBDOMAIN.test(name);
  if (!valid || name.length > 253) {
    throw new UsageError(`invalid ${kind} name "${name}"`);
  }
  return { kind, name, text };
}
