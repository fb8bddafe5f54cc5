/** `--patch` as krelay takes it: a merge patch of the agent Pod, JSON or YAML. */
import assert from "node:assert/strict";
import { agentJob } from "./agent.ts";
import { agentNamespaceOf, parseAgentPatch, readAgentPatch } from "./agent_patch.ts";
import { UsageError } from "../errors.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

function usageError(fn: () => unknown, re: RegExp): void {
  assert.throws(fn, (e: unknown) => e instanceof UsageError && re.test(e.message));
}

async function jobWith(text: string): Promise<Any> {
  return await agentJob({
    namespace: "default",
    image: "img:1",
    patch: parseAgentPatch(text, "--patch"),
    readyTimeoutMs: 1000,
    log: () => {},
  });
}

Deno.test("patch: krelay's README example (JSON) moves the agent and selects nodes", async () => {
  const text = '{"metadata":{"namespace":"kube-public"},"spec":{"nodeSelector":{"k": "v"}}}';
  const p = parseAgentPatch(text, "--patch");
  assert.equal(p.namespace, "kube-public");
  assert.equal(p.legacy, false);
  assert.equal(agentNamespaceOf(undefined, p), "kube-public");
  const job = await jobWith(text);
  const pod = job.spec.template.spec;
  assert.deepEqual(pod.nodeSelector, { k: "v" });
  assert.equal(pod.spec, undefined, "no spec.spec");
  assert.equal(pod.metadata, undefined, "no spec.metadata");
  // Everything else of the agent is kept.
  assert.equal(pod.containers[0].image, "img:1");
  assert.equal(pod.automountServiceAccountToken, false);
});

Deno.test("patch: krelay's README example (YAML) with generateName, labels, annotations", async () => {
  const job = await jobWith([
    "metadata:",
    "  generateName: foo-",
    "  labels:",
    "    team: x",
    "    app.kubernetes.io/name: something-else",
    "  annotations:",
    "    note: hello",
    "spec:",
    "  nodeSelector:",
    "    your-key: your-value",
    "",
  ].join("\n"));
  assert.equal(job.metadata.generateName, "foo-");
  for (const m of [job.metadata, job.spec.template.metadata]) {
    assert.equal(m.labels.team, "x");
    // The labels that find the agent stay.
    assert.equal(m.labels["app.kubernetes.io/name"], "kubectl-relay-agent");
    assert.equal(m.labels["app.kubernetes.io/managed-by"], "kubectl-relay");
    assert.equal(m.annotations.note, "hello");
  }
  assert.deepEqual(job.spec.template.spec.nodeSelector, { "your-key": "your-value" });
});

Deno.test("patch: a patch cannot remove the agent's labels", async () => {
  const job = await jobWith(
    '{"metadata":{"labels":{"app.kubernetes.io/name":null,"app.kubernetes.io/managed-by":null}}}',
  );
  assert.equal(job.spec.template.metadata.labels["app.kubernetes.io/name"], "kubectl-relay-agent");
  assert.equal(job.metadata.labels["app.kubernetes.io/managed-by"], "kubectl-relay");
});

Deno.test("patch: container args written for krelay's server change the agent's args only", async () => {
  for (const name of ["krelay-server", "agent", undefined]) {
    const c = name === undefined ? {} : { name };
    const job = await jobWith(
      JSON.stringify({ spec: { containers: [{ ...c, args: ["--idle-timeout=15s"] }] } }),
    );
    const containers = job.spec.template.spec.containers;
    assert.equal(containers.length, 1, `one container (${name})`);
    assert.equal(containers[0].name, "agent");
    // After the template's args, so the tunnel stays on loopback and the health port stays.
    assert.deepEqual(containers[0].args, [
      "--listen",
      "127.0.0.1:9527",
      "--health",
      "0.0.0.0:9528",
      "--idle-exit",
      "5m",
      "--idle-timeout=15s",
    ]);
    assert.equal(containers[0].image, "img:1");
    assert.equal(containers[0].readinessProbe.tcpSocket.port, "health");
    assert.equal(containers[0].securityContext.readOnlyRootFilesystem, true);
  }
});

Deno.test("patch: lists Kubernetes merges by key merge; others replace (RFC 7386)", async () => {
  const job = await jobWith(JSON.stringify({
    spec: {
      tolerations: [{ key: "dedicated", operator: "Exists" }],
      containers: [
        {
          name: "agent",
          env: [{ name: "A", value: "1" }],
          resources: { limits: { memory: "256Mi" } },
        },
        { name: "sidecar", image: "busybox" },
      ],
      volumes: [{ name: "extra", emptyDir: {} }],
    },
  }));
  const spec = job.spec.template.spec;
  assert.deepEqual(spec.tolerations, [{ key: "dedicated", operator: "Exists" }]);
  assert.deepEqual(spec.containers.map((c: Any) => c.name), ["agent", "sidecar"]);
  const env = spec.containers[0].env as { name: string; value: string }[];
  assert.deepEqual(env.find((e) => e.name === "A"), { name: "A", value: "1" });
  assert.ok(env.some((e) => e.name === "KUBECTL_RELAY_TOKEN"), "the token is kept");
  assert.ok(env.some((e) => e.name === "DENO_V8_FLAGS"), "the template's V8 flags are kept");
  assert.equal(spec.containers[0].resources.limits.memory, "256Mi");
  assert.equal(spec.containers[0].resources.limits.cpu, "1", "other limits kept");
  assert.deepEqual(spec.volumes.map((v: Any) => v.name), ["tmp", "extra"]);
});

Deno.test("patch: the old bare pod spec shape still works (deprecated, told apart by its keys)", async () => {
  const p = parseAgentPatch('{"nodeSelector":{"k":"v"}}', "--patch");
  assert.equal(p.legacy, true);
  const job = await jobWith('{"nodeSelector":{"k":"v"}}');
  assert.deepEqual(job.spec.template.spec.nodeSelector, { k: "v" });
  usageError(
    () => parseAgentPatch('{"spec":{},"nodeSelector":{}}', "--patch"),
    /unknown field "nodeSelector"/,
  );
});

Deno.test("patch: namespace from --server.namespace or the patch; a contradiction is an error", () => {
  const p = parseAgentPatch("metadata: {namespace: tools}", "--patch");
  assert.equal(agentNamespaceOf(undefined, undefined), "default");
  assert.equal(agentNamespaceOf("x", undefined), "x");
  assert.equal(agentNamespaceOf("tools", p), "tools");
  usageError(
    () => agentNamespaceOf("kube-public", p),
    /^--server\.namespace "kube-public" contradicts metadata\.namespace "tools" in --patch/,
  );
});

Deno.test("patch: bad input is a clear user error", () => {
  usageError(() => parseAgentPatch("{", "--patch"), /^--patch is neither valid JSON nor YAML/);
  usageError(() => parseAgentPatch("[1]", "--patch"), /must be an object/);
  usageError(() => parseAgentPatch("a: 1\n---\nb: 2\n", "--patch"), /neither valid JSON nor YAML/);
  usageError(() => parseAgentPatch('{"metadata":{"name":"x"}}', "--patch"), /generateName/);
  usageError(() => parseAgentPatch('{"metadata":{"finalizers":[]}}', "--patch"), /not supported/);
  usageError(
    () => parseAgentPatch('{"metadata":{"labels":{"n":1}}}', "--patch"),
    /metadata\.labels\.n must be a string/,
  );
  usageError(() => parseAgentPatch('{"kind":"Deployment"}', "--patch"), /kind must be Pod/);
  usageError(() => readAgentPatch("{}", "f.yaml", () => "{}"), /not both/);
  usageError(
    () =>
      readAgentPatch(undefined, "nope.yaml", () => {
        throw new Error("No such file");
      }),
    /^cannot read nope\.yaml/,
  );
  assert.equal(
    readAgentPatch(undefined, "p.yaml", () => "spec: {}\n")?.source,
    "--patch-file p.yaml",
  );
});
