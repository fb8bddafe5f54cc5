/** The few fields of Kubernetes objects that kubectl-relay reads. */

export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  labels?: Record<string, string>;
  resourceVersion?: string;
  deletionTimestamp?: string;
  creationTimestamp?: string;
  ownerReferences?: { kind: string; name: string; uid: string; controller?: boolean }[];
}

export interface LabelSelectorRequirement {
  key: string;
  operator: "In" | "NotIn" | "Exists" | "DoesNotExist";
  values?: string[];
}

export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: LabelSelectorRequirement[];
}

export interface ContainerPort {
  name?: string;
  containerPort: number;
  protocol?: "TCP" | "UDP" | "SCTP";
}

export interface Container {
  name: string;
  image?: string;
  command?: string[];
  args?: string[];
  env?: { name: string; value?: string; valueFrom?: unknown }[];
  ports?: ContainerPort[];
  resources?: { limits?: Record<string, string>; requests?: Record<string, string> };
}

export interface PodCondition {
  type: string;
  status: "True" | "False" | "Unknown";
  lastTransitionTime?: string;
}

export interface Pod {
  metadata: ObjectMeta;
  spec: { containers: Container[]; nodeName?: string };
  status?: {
    phase?: string;
    podIP?: string;
    conditions?: PodCondition[];
    containerStatuses?: {
      name: string;
      state?: {
        terminated?: { reason?: string; exitCode?: number; message?: string };
        waiting?: { reason?: string; message?: string };
        running?: { startedAt?: string };
      };
    }[];
  };
}

export interface ServicePort {
  name?: string;
  port: number;
  protocol?: "TCP" | "UDP" | "SCTP";
  targetPort?: number | string;
}

export interface Service {
  metadata: ObjectMeta;
  spec: {
    type?: string;
    clusterIP?: string;
    externalName?: string;
    selector?: Record<string, string>;
    ports?: ServicePort[];
  };
}

/** Any workload with a pod selector (Deployment, StatefulSet, ReplicaSet, DaemonSet, Job). */
export interface Workload {
  metadata: ObjectMeta;
  spec: { selector?: LabelSelector; template?: { spec?: { containers: Container[] } } };
}

export interface List<T> {
  metadata: { resourceVersion: string };
  items: T[];
}

/** Encodes a LabelSelector as the `labelSelector` query string kubectl sends. */
export function selectorString(sel: LabelSelector): string {
  const parts = Object.entries(sel.matchLabels ?? {}).map(([k, v]) => `${k}=${v}`);
  for (const e of sel.matchExpressions ?? []) {
    const values = (e.values ?? []).join(",");
    if (e.operator === "In") parts.push(`${e.key} in (${values})`);
    else if (e.operator === "NotIn") parts.push(`${e.key} notin (${values})`);
    else if (e.operator === "Exists") parts.push(e.key);
    else parts.push(`!${e.key}`);
  }
  return parts.join(",");
}

/** A pod that is Running, Ready and not being deleted. */
export function isPodReady(pod: Pod): boolean {
  return !pod.metadata.deletionTimestamp && isPodServing(pod);
}

/**
 * A pod that is Running and Ready, possibly being deleted: an EndpointSlice's `serving` endpoint.
 * kube-proxy keeps the UDP conntrack entries of serving endpoints, terminating ones included.
 */
export function isPodServing(pod: Pod): boolean {
  return pod.status?.phase === "Running" && !!pod.status.podIP &&
    (pod.status.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True");
}
