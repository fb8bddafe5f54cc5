/** The release machinery cannot run here (no network to Deno's or GitHub's hosts): check its files. */
import assert from "node:assert/strict";
import { loadYaml } from "npm:@kubernetes/client-node@1.4.0";
import { renderKrew } from "./krew.ts";
import { compileCommands } from "./compile.ts";
import { AGENT_V8_FLAGS, CLIENT_V8_FLAGS } from "./agent_v8_flags.ts";
import { TARGETS } from "./targets.ts";
import { agentJob } from "../src/kube/agent.ts";
import { parseAgentPatch } from "../src/kube/agent_patch.ts";
import { DEFAULT_AGENT_IMAGE, VERSION } from "../src/version.ts";

const root = new URL("../", import.meta.url);
const read = (p: string) => Deno.readTextFile(new URL(p, root));
// deno-lint-ignore no-explicit-any
type Yaml = any;

Deno.test("workflows parse; release builds every target, the image and the krew manifest", async () => {
  const release: Yaml = loadYaml(await read(".github/workflows/release.yml"));
  assert.deepEqual(release.on.push.tags, ["v*"]);
  assert.equal(release.env.DENO_VERSION, "2.9.6");
  const steps = release.jobs.binaries.steps.map((s: Yaml) => s.run ?? s.uses).join("\n");
  assert.match(steps, /deno task compile/);
  assert.match(steps, /sha256sum/);
  assert.match(steps, /scripts\/krew\.ts/);
  const image = release.jobs["agent-image"].steps.find((s: Yaml) =>
    s.uses?.startsWith("docker/build-push-action")
  );
  assert.equal(image.with.file, "Dockerfile.agent");
  assert.equal(image.with.platforms, "linux/amd64,linux/arm64");
  const test: Yaml = loadYaml(await read(".github/workflows/test.yml"));
  assert.match(test.jobs.test.steps.map((s: Yaml) => s.run ?? "").join("\n"), /bash \.ci\/run/);
  assert.match(await read(".ci/run"), /DENO_VERSION=2\.9\.6/);
});

Deno.test("compile covers all five platforms plus the linux agents", () => {
  const cmds = compileCommands();
  for (const t of TARGETS) {
    assert.ok(cmds.some((c) => c.includes(t.triple) && c.at(-1) === "main.ts"), t.triple);
  }
  assert.equal(cmds.filter((c) => c.at(-1) === "agent.ts").length, 2);
  assert.ok(cmds.every((c) => c.includes("--unstable-net")));
  assert.ok(
    cmds.filter((c) => c.at(-1) === "main.ts").every((c) => c.includes("manifests/agent-job.yaml")),
  );
});

Deno.test("krew manifest renders with each archive's checksum", async () => {
  const template = await read("plugins/relay.yaml");
  const sums = TARGETS.map((t, i) =>
    `${String(i).repeat(64)}  kubectl-relay-${t.os}-${t.arch}.${
      t.os === "windows" ? "zip" : "tar.gz"
    }`
  ).join("\n");
  const plugin: Yaml = loadYaml(renderKrew(template, "v1.2.3", sums));
  assert.equal(plugin.spec.version, "v1.2.3");
  assert.equal(plugin.spec.platforms.length, 5);
  for (const p of plugin.spec.platforms) {
    assert.match(p.sha256, /^[0-9]{64}$/);
    assert.match(p.uri, /\/v1\.2\.3\/kubectl-relay-/);
  }
  assert.throws(
    () => renderKrew(template, "v1", sums.split("\n").slice(1).join("\n")),
    /no checksum/,
  );
});

Deno.test("agent image: pinned Deno, non-root, loopback tunnel port, health port, no shell in the final stage", async () => {
  const df = await read("Dockerfile.agent");
  assert.match(df, /denoland\/deno:2\.9\.6/);
  const final = df.slice(df.lastIndexOf("FROM "));
  assert.match(final, /distroless/);
  assert.match(final, /USER 65532:65532/);
  assert.match(final, /EXPOSE 9528/);
  assert.match(final, /CMD \["--listen", "127\.0\.0\.1:9527", "--health", "0\.0\.0\.0:9528"\]/);
  assert.match(final, /ENTRYPOINT \["\/kubectl-relay-agent"\]/);
});

Deno.test("agent Job: hardened as the spec says, image tagged with the version", async () => {
  assert.equal(DEFAULT_AGENT_IMAGE, `ghcr.io/kubectl-relay/kubectl-relay-agent:v${VERSION}`);
  const job: Yaml = await agentJob({
    namespace: "ns1",
    image: DEFAULT_AGENT_IMAGE,
    patch: parseAgentPatch(
      '{"spec": {"tolerations": [{"operator": "Exists"}], "securityContext": {"runAsUser": 1000}}}',
      "--patch",
    ),
    readyTimeoutMs: 1,
    log: () => {},
  });
  assert.equal(job.metadata.namespace, "ns1");
  assert.equal(job.spec.backoffLimit, 0);
  // A finished Job (its agent exited after a client died) goes away soon, as krelay's does.
  assert.equal(job.spec.ttlSecondsAfterFinished, 10);
  const pod = job.spec.template.spec;
  assert.equal(job.spec.template.metadata.labels["app.kubernetes.io/name"], "kubectl-relay-agent");
  assert.equal(pod.restartPolicy, "Never");
  assert.equal(pod.automountServiceAccountToken, false);
  assert.equal(pod.securityContext.runAsNonRoot, true);
  assert.equal(pod.securityContext.runAsUser, 1000, "patch merged into the pod spec");
  assert.deepEqual(pod.tolerations, [{ operator: "Exists" }]);
  const c = pod.containers[0];
  assert.equal(c.image, DEFAULT_AGENT_IMAGE);
  assert.equal(c.securityContext.readOnlyRootFilesystem, true);
  assert.equal(c.securityContext.allowPrivilegeEscalation, false);
  assert.deepEqual(c.securityContext.capabilities.drop, ["ALL"]);
  assert.ok(c.resources.requests.memory);
});

Deno.test("compile task: dry run type-checks and lists a command per target", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "scripts/compile.ts", "--dry-run"],
    cwd: new URL("../", import.meta.url).pathname,
    stdin: "null",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  assert.equal(text.split("\n").filter((l) => l.startsWith("$ deno compile")).length, 7);
  assert.match(
    text,
    /--target x86_64-pc-windows-msvc -o dist\/windows-amd64\/kubectl-relay\.exe main\.ts/,
  );
});

Deno.test("agent Job: tunnel on the pod's loopback, probe on the health port, a fresh token per Job", async () => {
  const opts = {
    namespace: "ns1",
    image: DEFAULT_AGENT_IMAGE,
    readyTimeoutMs: 1,
    log: () => {},
  };
  const token = new Uint8Array(32).fill(0xab);
  const job: Yaml = await agentJob(opts, token);
  const c = job.spec.template.spec.containers[0];
  const arg = (flag: string) => c.args[c.args.indexOf(flag) + 1];
  assert.equal(arg("--listen"), "127.0.0.1:9527");
  assert.equal(arg("--health"), "0.0.0.0:9528");
  assert.deepEqual(c.ports, [{ name: "health", containerPort: 9528, protocol: "TCP" }]);
  assert.equal(c.readinessProbe.tcpSocket.port, "health");
  assert.deepEqual(c.env, [
    { name: "DENO_V8_FLAGS", value: AGENT_V8_FLAGS },
    { name: "KUBECTL_RELAY_TOKEN", value: "ab".repeat(32) },
  ]);
  // Without a token argument, each Job gets its own random one.
  const tokens = await Promise.all([1, 2].map(async () => {
    const j: Yaml = await agentJob(opts);
    const env = j.spec.template.spec.containers[0].env;
    assert.equal(env.length, 2);
    assert.equal(env[1].name, "KUBECTL_RELAY_TOKEN");
    assert.match(env[1].value, /^[0-9a-f]{64}$/);
    return env[1].value;
  }));
  assert.notEqual(tokens[0], tokens[1]);
  // A patch of the agent container's env (merged by name) keeps the V8 flags, cannot drop the token,
  // and a token in the patch is replaced by the client's.
  const patched: Yaml = await agentJob({
    ...opts,
    patch: parseAgentPatch(
      JSON.stringify({
        spec: {
          containers: [{
            name: "agent",
            image: "x",
            env: [{ name: "A", value: "1" }, {
              name: "KUBECTL_RELAY_TOKEN",
              value: "0".repeat(64),
            }],
          }],
        },
      }),
      "--patch",
    ),
  }, token);
  assert.deepEqual(patched.spec.template.spec.containers[0].env, [
    { name: "DENO_V8_FLAGS", value: AGENT_V8_FLAGS },
    { name: "A", value: "1" },
    { name: "KUBECTL_RELAY_TOKEN", value: "ab".repeat(32) },
  ]);
});

Deno.test("agent V8 flags: one value, compiled into the binary and the image, in the Job's env", async () => {
  assert.match(AGENT_V8_FLAGS, /^--max-old-space-size=\d+(,--[a-z-]+(=\d+)?)*$/);
  const agents = compileCommands().filter((c) => c.at(-1) === "agent.ts");
  assert.ok(agents.length > 0);
  for (const c of agents) assert.ok(c.includes(`--v8-flags=${AGENT_V8_FLAGS}`), c.join(" "));
  for (const c of compileCommands().filter((c) => c.at(-1) === "main.ts")) {
    assert.deepEqual(c.filter((a) => a.startsWith("--v8-flags")), [
      `--v8-flags=${CLIENT_V8_FLAGS}`,
    ]);
  }
  // The source launcher runs the client with the same flags, whichever deno it finds.
  const launcher = await read("bin/kubectl-relay");
  const runs = launcher.split("\n").filter((l) => / run -A /.test(l));
  assert.equal(runs.length, 3);
  for (const l of runs) assert.ok(l.includes(`--v8-flags=${CLIENT_V8_FLAGS}`), l);
  const df = await read("Dockerfile.agent");
  const build = df.slice(0, df.lastIndexOf("FROM "));
  assert.match(build, /deno compile /);
  assert.ok(build.includes(` --v8-flags=${AGENT_V8_FLAGS} `), "Dockerfile.agent's deno compile");
  const manifest: Yaml = loadYaml(await read("manifests/agent-job.yaml"));
  const env = manifest.spec.template.spec.containers[0].env as { name: string; value: string }[];
  assert.deepEqual(env.filter((e) => e.name === "DENO_V8_FLAGS").map((e) => e.value), [
    AGENT_V8_FLAGS,
  ]);
});
