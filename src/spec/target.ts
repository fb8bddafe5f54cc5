import { UsageError } from "../errors.ts";
import { isIPv4, isIPv6, isValidHostname } from "../protocol/addr.ts";

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
