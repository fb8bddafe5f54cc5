/**
 * Shared agents (`--reuse-agent`): a run that finds a live agent of the same user, created from
 * the same pod template (image, arguments, `--patch`) in the agent namespace, uses it instead of
 * creating a Job; it reads that agent's token from the Job.
 *
 * Labels only find candidates (anyone who may create Jobs there could forge them); a candidate is
 * used only if its stored pod template equals, token aside, the one the apiserver makes of this
 * run's own Job (a server-side dry run applies the same defaults), and its pod is controlled by
 * that Job and runs exactly the template's containers.
 *
 * @module
 */

import { parseToken, TOKEN_ENV } from "../protocol/auth.ts";
import { AGENT_CONTAINER, podEnded } from "./agent_end.ts";
import type { KubeClient } from "./client.ts";
import type { Json } from "./merge_patch.ts";
import { type Container, isPodReady, type List, type ObjectMeta, type Pod } from "./types.ts";

/** Marks an agent that any run of the same user and template may use, and none deletes. */
export const SHARED_LABEL = "kubectl-relay.io/shared";
/** Digest of the agent's pod template without its token. */
export const SPEC_LABEL = "kubectl-relay.io/spec";
/** Digest of the name of the user who created it. */
export const USER_LABEL = "kubectl-relay.io/user";

/** What makes two agents interchangeable for a run. */
export interface AgentIdentity {
  /** Digest of the pod template spec without the token (label-safe). */
  spec: string;
  /** Digest of the user's name (label-safe). */
  user: string;
}

/** The fields of an agent Job that reuse reads. */
export interface AgentJob {
  metadata: ObjectMeta;
  spec?: { template?: { metadata?: { labels?: Record<string, string> }; spec?: Json } };
  status?: { active?: number; succeeded?: number; failed?: number };
}

/** Where an agent's token is: in the Job's env, or in a Secret it references. */
export type TokenSource =
  | { value: string }
  | { secret: string; key: string };

/** JSON with object keys sorted, so equal values give equal text. */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(",")}]`;
  if (v !== null && typeof v === "object") {
    const entries = Object.entries(v as Record<string, unknown>)
      .filter(([, x]) => x !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, x]) => `${JSON.stringify(k)}:${canonicalJson(x)}`).join(",")}}`;
  }
  return JSON.stringify(v);
}

/** A pod spec with the token's value (or reference) blanked in every container. */
export function withoutToken(podSpec: Json | undefined): Json {
  const copy = JSON.parse(JSON.stringify(podSpec ?? {})) as { containers?: Container[] };
  for (const c of copy.containers ?? []) {
    for (const e of c.env ?? []) {
      if (e.name === TOKEN_ENV) {
        delete e.value;
        delete e.valueFrom;
      }
    }
  }
  return copy as Json;
}

async function digest(text: string): Promise<string> {
  const hash = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(hash).subarray(0, 16)].map((b) => b.toString(16).padStart(2, "0"))
    .join("");
}

/** The digest of a Job's pod template spec, token aside (the SPEC_LABEL value). */
export function templateDigest(job: AgentJob | Record<string, Json>): Promise<string> {
  return digest(canonicalJson(withoutToken((job as AgentJob).spec?.template?.spec)));
}

/** The user's name as the apiserver authenticates it (SelfSubjectReview), if it says. */
export async function userName(client: KubeClient): Promise<string | undefined> {
  const review = await client.create<{ status?: { userInfo?: { username?: string } } }>(
    "/apis/authentication.k8s.io/v1/selfsubjectreviews",
    { apiVersion: "authentication.k8s.io/v1", kind: "SelfSubjectReview" },
  );
  return review.status?.userInfo?.username || undefined;
}

/** The USER_LABEL value of the user the apiserver authenticates, or undefined if it does not say. */
export async function userDigest(client: KubeClient): Promise<string | undefined> {
  const user = await userName(client).catch(() => undefined);
  return user === undefined ? undefined : await digest(`user\n${user}`);
}

/** Labels a Job (and its pod template) as a shared agent of `identity`. */
export function markShared(job: Record<string, Json>, identity: AgentIdentity): void {
  const labels = {
    [SHARED_LABEL]: "true",
    [SPEC_LABEL]: identity.spec,
    [USER_LABEL]: identity.user,
  };
  const meta = job.metadata as { labels?: Record<string, string> };
  meta.labels = { ...meta.labels, ...labels };
  const template = (job.spec as { template: { metadata?: { labels?: Record<string, string> } } })
    .template;
  template.metadata = { ...template.metadata, labels: { ...template.metadata?.labels, ...labels } };
}

/** Where the agent container of a pod spec gets its token from. */
export function tokenSource(podSpec: Json | undefined): TokenSource | undefined {
  const containers = (podSpec as { containers?: Container[] } | undefined)?.containers ?? [];
  const c = containers.find((c) => c.name === AGENT_CONTAINER) ?? containers[0];
  const env = c?.env?.find((e) => e.name === TOKEN_ENV);
  if (env?.value !== undefined) return { value: env.value };
  const ref = (env?.valueFrom as { secretKeyRef?: { name?: string; key?: string } } | undefined)
    ?.secretKeyRef;
  if (ref?.name && ref.key) return { secret: ref.name, key: ref.key };
  return undefined;
}

function containersOf(spec: Json | undefined): string {
  const cs = (spec as { containers?: Container[] } | undefined)?.containers ?? [];
  return canonicalJson(
    cs.map((c) => ({ name: c.name, image: c.image, command: c.command, args: c.args, env: c.env })),
  );
}

function runs(pod: Pod): boolean {
  const statuses = pod.status?.containerStatuses ?? [];
  return isPodReady(pod) ||
    (pod.status?.phase === "Running" && !pod.metadata.deletionTimestamp &&
      statuses.length > 0 && statuses.every((s) => s.state?.running));
}

/**
 * Picks a shared agent to reuse (pure): a Job of `user` that is running and not being deleted,
 * whose pod template equals `wanted` (the dry-run result of this run's own Job) token aside, with
 * a running pod it controls whose containers are the template's. The newest such agent wins.
 */
export function pickReusable(
  jobs: AgentJob[],
  pods: Pod[],
  wanted: Json | undefined,
  user: string,
): { job: AgentJob; pod: Pod } | undefined {
  const want = canonicalJson(withoutToken(wanted));
  const usable = jobs.filter((j) =>
    j.metadata.labels?.[USER_LABEL] === user &&
    !j.metadata.deletionTimestamp &&
    !(j.status?.succeeded || j.status?.failed) &&
    canonicalJson(withoutToken(j.spec?.template?.spec)) === want
  ).sort((a, b) =>
    (b.metadata.creationTimestamp ?? "").localeCompare(a.metadata.creationTimestamp ?? "")
  );
  for (const job of usable) {
    const template = containersOf(job.spec?.template?.spec);
    const pod = pods.find((p) =>
      p.metadata.ownerReferences?.some((o) =>
        o.controller && o.kind === "Job" && o.uid === job.metadata.uid
      ) && runs(p) && !podEnded(p) && containersOf(p.spec as unknown as Json) === template
    );
    if (pod) return { job, pod };
  }
  return undefined;
}

/** A live shared agent this run may use. */
export interface ReusableAgent {
  job: string;
  pod: string;
  token: Uint8Array;
}

/**
 * Looks for a shared agent of `identity` in `namespace` that this run may use instead of creating
 * `job` (its own Job, with a fresh token) as `user` (USER_LABEL value): the candidate lists, the
 * dry run and the user are asked for at once. Undefined if there is none, if the user is unknown, or on any error (the run
 * then creates its own agent).
 */
export async function findReusableAgent(
  client: KubeClient,
  namespace: string,
  job: Promise<Record<string, Json>>,
  user: Promise<string | undefined>,
  log: (line: string) => void,
): Promise<ReusableAgent | undefined> {
  const ns = encodeURIComponent(namespace);
  // All shared agents of the namespace (a handful): template and user are checked below, so the
  // lists need not wait for this run's Job or the apiserver's word on who the user is.
  const selector = `app.kubernetes.io/name=kubectl-relay-agent,${SHARED_LABEL}=true`;
  const query = `labelSelector=${encodeURIComponent(selector)}`;
  try {
    const [who, jobs, pods, dry] = await Promise.all([
      user,
      client.get<List<AgentJob>>(`/apis/batch/v1/namespaces/${ns}/jobs?${query}`),
      client.get<List<Pod>>(`/api/v1/namespaces/${ns}/pods?${query}`),
      // The apiserver's defaults (and admission) applied to this run's own Job, not stored.
      job.then((j) =>
        client.create<AgentJob>(`/apis/batch/v1/namespaces/${ns}/jobs?dryRun=All`, j)
      ),
    ]);
    if (!who) return undefined;
    const found = pickReusable(jobs.items, pods.items, dry.spec?.template?.spec, who);
    if (!found) {
      log(`no shared agent to reuse (${jobs.items.length} candidate Job(s))`);
      return undefined;
    }
    const source = tokenSource(found.job.spec?.template?.spec);
    let text: string | undefined;
    if (source && "value" in source) text = source.value;
    else if (source) {
      const secret = await client.get<{ data?: Record<string, string> }>(
        `/api/v1/namespaces/${ns}/secrets/${encodeURIComponent(source.secret)}`,
      );
      const data = secret.data?.[source.key];
      text = data === undefined ? undefined : atob(data);
    }
    const token = text === undefined ? undefined : parseToken(text.trim());
    if (!token) {
      log(`shared agent ${found.job.metadata.name} has no usable token`);
      return undefined;
    }
    return { job: found.job.metadata.name, pod: found.pod.metadata.name, token };
  } catch (e) {
    log(`looking for a shared agent failed: ${(e as Error).message}`);
    return undefined;
  }
}
