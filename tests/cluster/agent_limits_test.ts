/**
 * The runtime enforces what a kubelet enforces on agent pods, seen through the real control
 * plane: a Job with the agent manifest's securityContext, env and resources runs agent.ts as
 * uid/gid 65532 without capabilities, with the manifest's V8 flags in its environment, in a memory
 * cgroup with the manifest's limit, which goes with the pod; an agent whose limit is too small is
 * OOM-killed and its pod reports it as a kubelet does (phase Failed, container terminated, reason
 * OOMKilled, exit code 137), failing its Job.
 */

import assert from "node:assert/strict";
import { loadYaml } from "@kubernetes/client-node";
import { sharedCluster } from "./cluster.ts";
import { kubectl } from "../_lib/relay.ts";
import { poll } from "../_lib/poll.ts";
import { procStatus } from "../_lib/proc.ts";
import { AGENT_V8_FLAGS } from "../../scripts/agent_v8_flags.ts";

const REPO = new URL("../../", import.meta.url).pathname;
const NS = "relay-limits-test";

interface Manifest {
  spec: {
    template: {
      spec: {
        securityContext?: Record<string, unknown>;
        containers: {
          args?: string[];
          env?: { name: string; value?: string }[];
          ports?: unknown[];
          readinessProbe?: unknown;
          resources?: { limits?: Record<string, string>; requests?: Record<string, string> };
          securityContext?: Record<string, unknown>;
        }[];
      };
    };
  };
}

interface PodJson {
  metadata: { name: string; deletionTimestamp?: string };
  status: {
    phase?: string;
    containerStatuses?: {
      ready?: boolean;
      state?: { terminated?: { reason?: string; exitCode?: number }; running?: unknown };
    }[];
  };
}

const exists = (p: string) => Deno.stat(p).then(() => true, () => false);

/** A Job like the one the client creates (the manifest's securityContext and resources). */
async function agentJob(name: string, memoryLimit?: string): Promise<string> {
  const m = loadYaml<Manifest>(await Deno.readTextFile(`${REPO}manifests/agent-job.yaml`));
  const tmpl = m.spec.template.spec;
  const c = tmpl.containers[0];
  const mem = memoryLimit ? { memory: memoryLimit } : {};
  const limits = { ...c.resources?.limits, ...mem };
  const requests = { ...c.resources?.requests, ...mem };
  const job = {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: { name, namespace: NS },
    spec: {
      backoffLimit: 0,
      template: {
        metadata: { labels: { "app.kubernetes.io/name": "kubectl-relay-agent" } },
        spec: {
          restartPolicy: "Never",
          securityContext: tmpl.securityContext,
          containers: [{
            name: "agent",
            image: "kubectl-relay-agent:test",
            args: c.args,
            // The client fills in a fresh token (64 hex digits) for its placeholder.
            env: c.env?.map((e) =>
              e.name === "KUBECTL_RELAY_TOKEN" ? { ...e, value: "ab".repeat(32) } : e
            ),
            ports: c.ports,
            readinessProbe: c.readinessProbe,
            resources: { limits, requests },
            securityContext: c.securityContext,
          }],
        },
      },
    },
  };
  const file = await Deno.makeTempFile({ suffix: ".json" });
  try {
    await Deno.writeTextFile(file, JSON.stringify(job));
    await kubectl((await sharedCluster()).kubeconfig, "create", "-f", file);
  } finally {
    await Deno.remove(file);
  }
  return name;
}

async function jobPods(jobName: string): Promise<PodJson[]> {
  const kc = (await sharedCluster()).kubeconfig;
  const out = await kubectl(kc, "-n", NS, "get", "pods", "-l", `job-name=${jobName}`, "-o", "json");
  return (JSON.parse(out).items as PodJson[]).filter((p) => !p.metadata.deletionTimestamp);
}

let nsReady: Promise<void> | undefined;
function setup(): Promise<void> {
  nsReady ??= (async () => {
    const kc = (await sharedCluster()).kubeconfig;
    await kubectl(kc, "create", "namespace", NS).catch(() => "");
    await poll("default ServiceAccount", 30000, async () => {
      await kubectl(kc, "-n", NS, "get", "serviceaccount", "default");
      return true;
    });
  })();
  return nsReady;
}

const opts = { sanitizeResources: true, sanitizeOps: true };

Deno.test({
  name: "agent limits: the manifest's agent runs as 65532 without capabilities, in a 128Mi cgroup",
  ...opts,
}, async () => {
  await setup();
  const c = await sharedCluster();
  await agentJob("limited");
  const pod = await poll("agent pod Ready", 60000, async () => {
    const [p] = await jobPods("limited");
    return p?.status.containerStatuses?.[0]?.ready ? p : null;
  });
  const base = `${c.dir}/agents/${NS}_${pod.metadata.name}`;
  const pid = Number((await Deno.readTextFile(`${base}.pid`)).trim());
  const st = procStatus(pid);
  assert.equal(st.Uid, "65532\t65532\t65532\t65532");
  assert.equal(st.Gid, "65532\t65532\t65532\t65532");
  assert.equal(st.Groups, "");
  assert.equal(st.CapEff, "0000000000000000");
  assert.equal(st.CapBnd, "0000000000000000"); // capabilities: drop: [ALL]
  assert.equal(st.NoNewPrivs, "1"); // allowPrivilegeEscalation: false
  // The container's env is the process's, the V8 heap flags with it (`deno run` reads them).
  const environ = (await Deno.readTextFile(`/proc/${pid}/environ`)).split("\0");
  assert.ok(environ.includes(`DENO_V8_FLAGS=${AGENT_V8_FLAGS}`), environ.join(" "));
  const cg = (await Deno.readTextFile(`${base}.cgroup`)).trim();
  assert.deepEqual((await Deno.readTextFile(`${cg}/cgroup.procs`)).trim().split("\n"), [`${pid}`]);
  const limit = await Deno.readTextFile(`${cg}/memory.limit_in_bytes`).catch(() =>
    Deno.readTextFile(`${cg}/memory.max`)
  );
  assert.equal(limit.trim(), String(128 * 2 ** 20));

  await kubectl(c.kubeconfig, "-n", NS, "delete", "job", "limited", "--cascade=foreground");
  await poll("agent process gone", 30000, async () => {
    const s = await Deno.readTextFile(`/proc/${pid}/stat`).catch(() => null);
    return s === null || s.split(") ")[1]?.startsWith("Z") ? true : null;
  });
  await poll("agent cgroup removed", 10000, async () => (await exists(cg)) ? null : true);
  const peak = Number((await Deno.readTextFile(`${base}.peak`)).trim());
  assert.ok(peak > 0 && peak <= 128 * 2 ** 20, `peak ${peak}`);
});

Deno.test({
  name: "agent limits: an agent over its memory limit is OOMKilled (137), its pod and Job fail",
  ...opts,
}, async () => {
  await setup();
  const c = await sharedCluster();
  // Deno alone needs more than 8 MiB of anonymous memory: the kernel kills it while it starts.
  await agentJob("oom", "8Mi");
  const pod = await poll("agent pod Failed", 60000, async () => {
    const [p] = await jobPods("oom");
    return p?.status.phase === "Failed" ? p : null;
  });
  const term = pod.status.containerStatuses?.[0]?.state?.terminated;
  assert.deepEqual({ reason: term?.reason, exitCode: term?.exitCode }, {
    reason: "OOMKilled",
    exitCode: 137,
  });
  const base = `${c.dir}/agents/${NS}_${pod.metadata.name}`;
  assert.equal(await exists(`${base}.cgroup`), false, "cgroup path file still there");
  const peak = Number((await Deno.readTextFile(`${base}.peak`)).trim());
  assert.ok(peak > 0 && peak <= 8 * 2 ** 20, `peak ${peak}`);
  const cgDir = (await Deno.readTextFile(`${c.dir}/runtime.json`).then(JSON.parse)).cgroup;
  assert.ok(cgDir, "runtime.json has no cgroup");
  assert.equal(await exists(`${cgDir}/${NS}_${pod.metadata.name}`), false);
  const failed = await poll("Job Failed", 30000, async () => {
    const j = JSON.parse(await kubectl(c.kubeconfig, "-n", NS, "get", "job", "oom", "-o", "json"));
    const cond = (j.status?.conditions ?? []) as { type: string; status: string }[];
    return cond.some((x) => x.type === "Failed" && x.status === "True") ? true : null;
  });
  assert.ok(failed);
  await kubectl(c.kubeconfig, "-n", NS, "delete", "job", "oom", "--cascade=foreground");
});

Deno.test({ name: "agent limits: cleanup namespace", ...opts }, async () => {
  if (!nsReady) return;
  await kubectl((await sharedCluster()).kubeconfig, "delete", "namespace", NS, "--wait=false");
});
