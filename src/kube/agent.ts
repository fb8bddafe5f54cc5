import yaml from "npm:js-yaml@4.1.0";
import { UsageError } from "../errors.ts";
import { KubeApiError, type KubeClient } from "./client.ts";
import { type AgentPatch, applyAgentPatch } from "./agent_patch.ts";
import type { Json } from "./merge_patch.ts";
import { PodTracker } from "./pods.ts";
import { type AgentIdentity, markShared } from "./agent_reuse.ts";
import { isPodReady, type Pod } from "./types.ts";
import { formatToken, TOKEN_ENV, TOKEN_LENGTH } from "../protocol/auth.ts";
import {
  AGENT_CONTAINER,
  describeAgentEnd,
  lastLogLine,
  LOG_TAIL_LINES,
  podEnded,
  wasOOMKilled,
} from "./agent_end.ts";

/** The label every agent pod and Job carries. */
export const AGENT_LABEL = "app.kubernetes.io/name=kubectl-relay-agent";
/** The port the agent listens on inside its pod, on the pod's loopback address only. */
export const AGENT_PORT = 9527;

/** How to create the agent. */
export interface AgentOptions {
  namespace: string;
  image: string;
  /** `--patch`: a merge patch of the agent's Pod. */
  patch?: AgentPatch;
  readyTimeoutMs: number;
  log: (line: string) => void;
  /** Debug log (`-v`): startup milestones (the Job's creation). */
  debug?: (line: string) => void;
}

/** A running agent: its Job and current pod, and the token every connection must present. */
export interface AgentHandle {
  job: string;
  namespace: string;
  pod: string;
  /** This agent's secret (PROTOCOL.md §0), drawn when its Job was created. */
  token: Uint8Array;
  /** `performance.now()` when its creation began. */
  startedAt: number;
}

/** A fresh agent token: {@link TOKEN_LENGTH} bytes from the platform's secure random source. */
export function newAgentToken(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(TOKEN_LENGTH));
}

let template: Promise<Record<string, Json>> | undefined;

/** manifests/agent-job.yaml, read and parsed once per process; a fresh copy for each caller. */
async function loadTemplate(): Promise<Record<string, Json>> {
  template ??= (async () => {
    const url = new URL("../../manifests/agent-job.yaml", import.meta.url);
    const text = url.protocol === "file:"
      ? await Deno.readTextFile(url)
      : await (await fetch(url)).text();
    return yaml.load(text) as Record<string, Json>;
  })();
  template.catch(() => (template = undefined)); // a failed read is tried again
  return structuredClone(await template);
}

/**
 * Reads and parses the agent Job template now (the first YAML parse costs a few to tens of ms),
 * so a run does it while its credentials load rather than before creating the Job.
 */
export function preloadAgentTemplate(): void {
  loadTemplate().catch(() => {}); // the real use reports the error
}

/**
 * Builds the agent Job object from manifests/agent-job.yaml, with `token` (hex) in the agent
 * container's `KUBECTL_RELAY_TOKEN`, set after `--patch` is merged so no patch can drop it.
 */
export async function agentJob(
  opts: AgentOptions,
  token: Uint8Array = newAgentToken(),
): Promise<Record<string, Json>> {
  const job = await loadTemplate();
  const meta = job.metadata as Record<string, Json>;
  meta.namespace = opts.namespace;
  const spec = job.spec as Record<string, Json>;
  const template = spec.template as Record<string, Json>;
  const podSpec = template.spec as { containers: Record<string, Json>[] };
  const container = podSpec.containers[0];
  container.image = opts.image;
  const templateArgs = container.args as string[];
  if (opts.patch) applyAgentPatch(job, opts.patch);
  const patched = (job.spec as Record<string, Json>).template as Record<string, Json>;
  const patchedSpec = patched.spec as { containers?: Record<string, Json>[] };
  keepTemplateArgs(patchedSpec, templateArgs);
  setTokenEnv(patchedSpec, token);
  return job;
}

/**
 * Args that a patch gives the agent container come after the template's (the agent takes the last
 * value of a repeated flag), so a patch written for krelay (`args: ["--idle-timeout=15s"]`) keeps
 * the tunnel on the pod's loopback and the health port its readiness probe needs.
 */
function keepTemplateArgs(
  podSpec: { containers?: Record<string, Json>[] },
  templateArgs: string[],
): void {
  const c = podSpec.containers?.find((c) => c.name === AGENT_CONTAINER);
  if (!c || !Array.isArray(c.args) || c.args === templateArgs) return;
  const args = c.args as string[];
  if (args.length >= templateArgs.length && templateArgs.every((a, i) => args[i] === a)) return;
  c.args = [...templateArgs, ...args];
}

/** Sets (or replaces) `KUBECTL_RELAY_TOKEN` in the agent container's env. */
function setTokenEnv(podSpec: { containers?: Record<string, Json>[] }, token: Uint8Array): void {
  const containers = podSpec.containers ?? [];
  const c = containers.find((c) => c.name === AGENT_CONTAINER) ?? containers[0];
  if (!c) return;
  const env = (Array.isArray(c.env) ? c.env : []) as Record<string, Json>[];
  c.env = [...env.filter((e) => e.name !== TOKEN_ENV), {
    name: TOKEN_ENV,
    value: formatToken(token),
  }];
}

/** The pod runs and every container has started (its process may not listen yet). */
function isPodStarted(pod: Pod): boolean {
  const statuses = pod.status?.containerStatuses ?? [];
  return pod.status?.phase === "Running" && !pod.metadata.deletionTimestamp &&
    statuses.length > 0 && statuses.every((s) => s.state?.running);
}

/** Why a pod that has not ended cannot start (image or config problems), if so. */
function podProblem(pod: Pod): string | undefined {
  const statuses = pod.status?.containerStatuses ?? [];
  for (const s of statuses) {
    const reason = s.state?.waiting?.reason;
    if (
      reason &&
      /ErrImagePull|ImagePullBackOff|InvalidImageName|CreateContainerConfigError/.test(reason)
    ) {
      return `agent pod ${pod.metadata.name}: ${reason}${
        s.state?.waiting?.message ? `: ${s.state.waiting.message}` : ""
      }`;
    }
  }
  return undefined;
}

/** An agent Job just created, not yet waited for. */
export interface CreatedAgent {
  job: string;
  token: Uint8Array;
  /** `performance.now()` when its creation began. */
  startedAt: number;
}

/** Creates, waits for and deletes agent Jobs. */
export class AgentManager {
  #client: KubeClient;
  #opts: AgentOptions;
  #jobs = new Set<string>();

  constructor(client: KubeClient, opts: AgentOptions) {
    this.#client = client;
    this.#opts = opts;
  }

  #jobsPath(): string {
    return `/apis/batch/v1/namespaces/${encodeURIComponent(this.#opts.namespace)}/jobs`;
  }

  /**
   * Checks with SelfSubjectAccessReviews that the user may run and reach the agent, so a missing
   * right fails before anything is created, with the wording of the apiserver's Forbidden error.
   */
  async preflight(): Promise<void> {
    const ns = this.#opts.namespace;
    const checks = [
      { group: "batch", resource: "jobs", verb: "create" },
      { group: "", resource: "pods", subresource: "portforward", verb: "create" },
      { group: "", resource: "pods", subresource: "portforward", verb: "get" },
    ];
    await Promise.all(checks.map(async (c) => {
      const review = await this.#client.create<{ status?: { allowed?: boolean } }>(
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        {
          apiVersion: "authorization.k8s.io/v1",
          kind: "SelfSubjectAccessReview",
          spec: { resourceAttributes: { namespace: ns, ...c } },
        },
      ).catch(() => undefined); // reviews unavailable: let the real request decide
      if (review?.status?.allowed === false) {
        const what = c.subresource ? `${c.resource}/${c.subresource}` : c.resource;
        throw new UsageError(
          `forbidden: you cannot ${c.verb} resource "${what}" in API group "${c.group}" in the namespace "${ns}" (needed to run the agent; see manifests/rbac.yaml)`,
        );
      }
    }));
  }

  /** Creates an agent Job (shared for `shared`) and waits until its pod runs (`waitRunning`). */
  async start(shared?: AgentIdentity): Promise<AgentHandle> {
    this.#opts.log(`Starting agent in namespace ${this.#opts.namespace}…`);
    return await this.waitRunning(await this.create(shared));
  }

  /** The Job this manager creates, with `token`; labelled shared for `shared`. */
  async jobBody(token: Uint8Array, shared?: AgentIdentity): Promise<Record<string, Json>> {
    const body = await agentJob(this.#opts, token);
    if (shared) markShared(body, shared);
    return body;
  }

  /**
   * Creates an agent Job with a fresh token (without a note to the user), for `waitRunning`;
   * a shared one (`shared`: see agent_reuse.ts) when given this run's identity.
   */
  async create(shared?: AgentIdentity): Promise<CreatedAgent> {
    const startedAt = performance.now();
    const token = newAgentToken();
    const body = await this.jobBody(token, shared);
    let created: { metadata: { name: string } };
    try {
      created = await this.#client.create(this.#jobsPath(), body);
    } catch (e) {
      if (e instanceof KubeApiError) throw new UsageError(`cannot create the agent: ${e.display}`);
      throw e;
    }
    const job = created.metadata.name;
    this.#jobs.add(job);
    this.#opts.debug?.(`agent Job ${job} created`);
    return { job, token, startedAt };
  }

  /**
   * Waits until a created agent's container is running (Ready or not: its readiness probe may
   * lag by a probe period, while a port-forward reaches the agent as soon as it listens, which
   * the tunnel's start checks); deletes the Job if it never runs.
   */
  async waitRunning({ job, token, startedAt }: CreatedAgent): Promise<AgentHandle> {
    const ns = this.#opts.namespace;
    const tracker = new PodTracker(
      this.#client,
      ns,
      `labelSelector=${encodeURIComponent(`job-name=${job}`)}`,
      { usable: (p) => isPodReady(p) || isPodStarted(p) },
    );
    try {
      await tracker.start();
      const deadline = Date.now() + this.#opts.readyTimeoutMs;
      while (true) {
        const pod = await tracker.readyPod(Math.min(1000, Math.max(0, deadline - Date.now())));
        if (pod) return { job, namespace: ns, pod: pod.metadata.name, token, startedAt };
        const ended = tracker.pods.find(podEnded);
        if (ended) throw new UsageError(await this.describeEnd(ended));
        const problem = tracker.pods.map(podProblem).find((p) => p);
        if (problem) throw new UsageError(problem);
        if (Date.now() >= deadline) {
          const phase = tracker.pods[0]?.status?.phase ?? "not created";
          throw new UsageError(
            `timed out after ${
              Math.round(this.#opts.readyTimeoutMs / 1000)
            }s waiting for the agent pod (${phase}); check \`kubectl -n ${ns} describe job ${job}\``,
          );
        }
      }
    } catch (e) {
      await this.delete(job).catch(() => {});
      throw e;
    } finally {
      tracker.stop();
    }
  }

  #podPath(namespace: string, pod: string): string {
    return `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(pod)}`;
  }

  /**
   * Undefined while the agent pod exists, runs and is not being deleted; else one line saying
   * what became of it (OOM-killed with its memory limit, failed with its last log line, deleted).
   */
  async gone(handle: AgentHandle): Promise<string | undefined> {
    let pod: Pod;
    try {
      pod = await this.#client.get<Pod>(this.#podPath(handle.namespace, handle.pod));
    } catch (e) {
      if (e instanceof KubeApiError && e.status === 404) return `agent pod ${handle.pod} is gone`;
      throw e;
    }
    if (podEnded(pod)) return await this.describeEnd(pod);
    if (pod.metadata.deletionTimestamp) return `agent pod ${handle.pod} is being deleted`;
    if (pod.status?.phase !== "Running") {
      return `agent pod ${handle.pod} is not running (${pod.status?.phase ?? "no phase"})`;
    }
    return undefined;
  }

  /**
   * One line on why an ended agent pod ended: an OOM kill names the memory limit; otherwise the
   * agent's last log line (pod log API) is quoted.
   */
  async describeEnd(pod: Pod): Promise<string> {
    if (wasOOMKilled(pod)) return describeAgentEnd(pod);
    const ns = pod.metadata.namespace ?? this.#opts.namespace;
    try {
      const log = await this.#client.getText(
        `${
          this.#podPath(ns, pod.metadata.name)
        }/log?container=${AGENT_CONTAINER}&tailLines=${LOG_TAIL_LINES}&limitBytes=65536`,
      );
      return describeAgentEnd(pod, lastLogLine(log));
    } catch (e) {
      const why = e instanceof KubeApiError ? e.display : (e as Error).message;
      return describeAgentEnd(pod, undefined, why);
    }
  }

  /**
   * Stops tracking a Job for `deleteAll`: a shared agent, once up, is left to exit when idle (and
   * its Job to `ttlSecondsAfterFinished`), since other runs may be using it.
   */
  release(job: string): void {
    this.#jobs.delete(job);
  }

  /** Deletes one agent Job (and, by propagation, its pod). */
  async delete(job: string): Promise<void> {
    await this.#client.delete(`${this.#jobsPath()}/${encodeURIComponent(job)}`);
    this.#jobs.delete(job);
  }

  /** Deletes every Job this manager created. */
  async deleteAll(): Promise<void> {
    await Promise.all([...this.#jobs].map((j) => this.delete(j).catch(() => {})));
  }
}
