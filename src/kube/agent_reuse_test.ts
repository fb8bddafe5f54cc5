/**
 * Shared-agent reuse (`--reuse-agent`): which running agent a run may use. The labels only find
 * candidates; a forged Job or pod (another template, another user, a pod the Job does not
 * control) is never picked.
 */
import assert from "node:assert/strict";
import { agentJob, newAgentToken } from "./agent.ts";
import {
  type AgentJob,
  canonicalJson,
  markShared,
  pickReusable,
  SHARED_LABEL,
  SPEC_LABEL,
  templateDigest,
  tokenSource,
  USER_LABEL,
  withoutToken,
} from "./agent_reuse.ts";
import type { Json } from "./merge_patch.ts";
import { type AgentPatch, parseAgentPatch } from "./agent_patch.ts";
import type { Pod } from "./types.ts";
import { formatToken, TOKEN_ENV } from "../protocol/auth.ts";

const OPTS = { namespace: "default", image: "agent:v1", readyTimeoutMs: 1, log: () => {} };

/** What the apiserver adds to a pod template when it stores a Job (a few of its defaults). */
function defaulted(spec: Json): Json {
  const s = structuredClone(spec) as Record<string, Json> & { containers: Record<string, Json>[] };
  s.dnsPolicy = "ClusterFirst";
  s.schedulerName = "default-scheduler";
  for (const c of s.containers) {
    c.imagePullPolicy = "IfNotPresent";
    c.terminationMessagePath = "/dev/termination-log";
  }
  return s;
}

let uid = 0;

/** A stored shared Job (defaults applied) and its running pod, for `user`. */
async function stored(
  user: string,
  opts: {
    patch?: AgentPatch;
    image?: string;
    created?: string;
    edit?: (spec: Record<string, Json>) => void;
  } = {},
): Promise<{ job: AgentJob; pod: Pod }> {
  const body = await agentJob({ ...OPTS, image: opts.image ?? OPTS.image, patch: opts.patch });
  markShared(body, { spec: "s", user });
  const tpl = (body.spec as { template: { spec: Json } }).template;
  tpl.spec = defaulted(tpl.spec);
  opts.edit?.(tpl.spec as Record<string, Json>);
  const jobUid = `uid-${++uid}`;
  const name = `kubectl-relay-agent-${uid}`;
  const job = {
    metadata: {
      name,
      uid: jobUid,
      labels: (body.metadata as { labels: Record<string, string> }).labels,
      creationTimestamp: opts.created ?? "2026-01-01T00:00:00Z",
    },
    spec: { template: { spec: tpl.spec } },
    status: { active: 1 },
  } as AgentJob;
  const pod = {
    metadata: {
      name: `${name}-abcde`,
      ownerReferences: [{ kind: "Job", name, uid: jobUid, controller: true }],
    },
    spec: structuredClone(tpl.spec),
    status: {
      phase: "Running",
      containerStatuses: [{ name: "agent", state: { running: { startedAt: "now" } } }],
    },
  } as unknown as Pod;
  return { job, pod };
}

/** What a dry run of this run's own Job returns: the same template, its own token, defaulted. */
async function wanted(opts: { patch?: AgentPatch; image?: string } = {}): Promise<Json> {
  const body = await agentJob({ ...OPTS, ...opts }, newAgentToken());
  return defaulted((body.spec as { template: { spec: Json } }).template.spec);
}

Deno.test("reuse: canonical JSON ignores key order; the token's value does not count", async () => {
  assert.equal(
    canonicalJson({ b: 1, a: [{ y: 2, x: 1 }] }),
    canonicalJson({ a: [{ x: 1, y: 2 }], b: 1 }),
  );
  assert.notEqual(canonicalJson({ a: 1 }), canonicalJson({ a: "1" }));
  const [one, two] = await Promise.all([
    agentJob(OPTS, newAgentToken()),
    agentJob(OPTS, newAgentToken()),
  ]);
  assert.notEqual(canonicalJson(one), canonicalJson(two), "different tokens");
  assert.equal(await templateDigest(one), await templateDigest(two));
  const patched = await agentJob({
    ...OPTS,
    patch: parseAgentPatch(`{"spec":{"nodeSelector":{"a":"b"}}}`, "--patch"),
  }, newAgentToken());
  assert.notEqual(await templateDigest(patched), await templateDigest(one));
  const other = await agentJob({ ...OPTS, image: "agent:v2" }, newAgentToken());
  assert.notEqual(await templateDigest(other), await templateDigest(one));
  const spec = withoutToken((one.spec as { template: { spec: Json } }).template.spec) as {
    containers: { env?: { name: string; value?: string }[] }[];
  };
  const env = spec.containers[0].env?.find((e) => e.name === TOKEN_ENV);
  assert.ok(env && env.value === undefined, "the token's value is blanked, the variable stays");
});

Deno.test("reuse: markShared labels the Job and its pods", async () => {
  const body = await agentJob(OPTS, newAgentToken());
  markShared(body, { spec: "abc", user: "def" });
  const want = { [SHARED_LABEL]: "true", [SPEC_LABEL]: "abc", [USER_LABEL]: "def" };
  const meta = body.metadata as { labels: Record<string, string> };
  const tpl = (body.spec as { template: { metadata: { labels: Record<string, string> } } })
    .template;
  for (const [k, v] of Object.entries(want)) {
    assert.equal(meta.labels[k], v);
    assert.equal(tpl.metadata.labels[k], v);
  }
  assert.equal(meta.labels["app.kubernetes.io/name"], "kubectl-relay-agent", "labels kept");
});

Deno.test("reuse: picks the user's running agent with the same template", async () => {
  const mine = await stored("alice");
  const found = pickReusable([mine.job], [mine.pod], await wanted(), "alice");
  assert.equal(found?.job.metadata.name, mine.job.metadata.name);
  assert.equal(found?.pod.metadata.name, mine.pod.metadata.name);
  // The newest of two wins.
  const newer = await stored("alice", { created: "2026-01-02T00:00:00Z" });
  const both = pickReusable(
    [mine.job, newer.job],
    [mine.pod, newer.pod],
    await wanted(),
    "alice",
  );
  assert.equal(both?.job.metadata.name, newer.job.metadata.name);
});

Deno.test("reuse: never another user's, another template's, or a forged or dead agent", async () => {
  const want = await wanted();
  const none = (jobs: AgentJob[], pods: Pod[], user = "alice", w = want) =>
    assert.equal(pickReusable(jobs, pods, w, user), undefined);

  const bob = await stored("bob");
  none([bob.job], [bob.pod]);

  // Same labels, but the template runs something else (a forged Job).
  const forged = await stored("alice", {
    edit: (s) => {
      (s.containers as Record<string, Json>[])[0].command = ["/bin/sh", "-c", "tee /tmp/x"];
    },
  });
  none([forged.job], [forged.pod]);
  const extra = await stored("alice", {
    edit: (s) => {
      (s.containers as Json[]).push({ name: "sidecar", image: "evil" });
    },
  });
  none([extra.job], [extra.pod]);
  // This run asks for another image or patch.
  const mine = await stored("alice");
  none([mine.job], [mine.pod], "alice", await wanted({ image: "agent:v2" }));
  none(
    [mine.job],
    [mine.pod],
    "alice",
    await wanted({ patch: parseAgentPatch(`{"spec":{"nodeSelector":{"a":"b"}}}`, "--patch") }),
  );

  // A pod the Job does not control, or whose containers differ from the template.
  const stray = structuredClone(mine.pod);
  stray.metadata.ownerReferences = [{ kind: "Job", name: "x", uid: "other", controller: true }];
  none([mine.job], [stray]);
  const notController = structuredClone(mine.pod);
  notController.metadata.ownerReferences![0].controller = false;
  none([mine.job], [notController]);
  const swapped = structuredClone(mine.pod);
  (swapped.spec.containers[0] as { image?: string }).image = "evil";
  none([mine.job], [swapped]);

  // Not running, ending, or being deleted.
  const pending = structuredClone(mine.pod);
  pending.status = { phase: "Pending" };
  none([mine.job], [pending]);
  const ended = structuredClone(mine.pod);
  ended.status = { phase: "Succeeded" };
  none([mine.job], [ended]);
  const deleting = structuredClone(mine.job);
  deleting.metadata.deletionTimestamp = "2026-01-01T00:00:00Z";
  none([deleting], [mine.pod]);
  const done = structuredClone(mine.job);
  done.status = { succeeded: 1 };
  none([done], [mine.pod]);

  // And the genuine one is still found with all of those around.
  const found = pickReusable(
    [bob.job, forged.job, extra.job, deleting, mine.job],
    [bob.pod, forged.pod, extra.pod, stray, pending, mine.pod],
    want,
    "alice",
  );
  assert.equal(found?.pod.metadata.name, mine.pod.metadata.name);
});

Deno.test("reuse: the token is read from the Job's env, or the Secret it names", async () => {
  const token = newAgentToken();
  const body = await agentJob(OPTS, token);
  const spec = (body.spec as { template: { spec: Json } }).template.spec;
  assert.deepEqual(tokenSource(spec), { value: formatToken(token) });
  const fromSecret = structuredClone(spec) as {
    containers: { env: { name: string; value?: string; valueFrom?: unknown }[] }[];
  };
  fromSecret.containers[0].env = [{
    name: TOKEN_ENV,
    valueFrom: { secretKeyRef: { name: "agent-token", key: "token" } },
  }];
  assert.deepEqual(tokenSource(fromSecret as unknown as Json), {
    secret: "agent-token",
    key: "token",
  });
  fromSecret.containers[0].env = [];
  assert.equal(tokenSource(fromSecret as unknown as Json), undefined);
});
