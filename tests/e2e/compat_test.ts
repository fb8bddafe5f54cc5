/**
 * End-to-end: krelay's command line works unchanged — `--patch` as a merge patch of the agent
 * Pod (JSON and YAML), `--idle-timeout` for the agent, the Job gone soon after a SIGKILLed client,
 * `proxy -l HOST:PORT`, and errors for krelay flags we do not support.
 */
import assert from "node:assert/strict";
import { NS, podNames, setup } from "./fixtures.ts";
import {
  agentJobs,
  curl,
  kubectl,
  type RelayProcess,
  runRelay,
  startRelay,
} from "../_lib/relay.ts";
import { curlNoProxy } from "../_lib/net.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
/** Where the patches put the agent. */
const AGENT_NS = "relay-compat";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Meta {
  name: string;
  generateName?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
interface AgentJob {
  metadata: Meta;
  status?: { succeeded?: number };
  spec: { template: { metadata: Meta; spec: { nodeSelector?: Record<string, string> } } };
}
interface AgentPod {
  metadata: Meta;
  spec: {
    nodeName?: string;
    nodeSelector?: Record<string, string>;
    containers: { args?: string[] }[];
  };
}

async function getJson<T>(kc: string, ...args: string[]): Promise<T[]> {
  return JSON.parse(await kubectl(kc, ...args, "-o", "json")).items as T[];
}

async function agentObjects(kc: string): Promise<{ jobs: AgentJob[]; pods: AgentPod[] }> {
  const sel = ["-n", AGENT_NS, "-l", "app.kubernetes.io/name=kubectl-relay-agent"];
  return {
    jobs: await getJson<AgentJob>(kc, "get", "jobs", ...sel),
    pods: await getJson<AgentPod>(kc, "get", "pods", ...sel),
  };
}

async function prepare(): Promise<{ kc: string; pod: string }> {
  const kc = await setup();
  await kubectl(kc, "create", "namespace", AGENT_NS).catch(() => "");
  // One node carries the label the patches select.
  await kubectl(kc, "label", "node", "kwok-node-1", "relay-compat=chosen", "--overwrite");
  const [pod] = await podNames(kc, "app=web");
  return { kc, pod };
}

/** Runs a relay, gives it to `fn`, then Ctrl-C: exit 0 and no agent left anywhere. */
async function withRelay(
  kc: string,
  args: string[],
  fn: (r: RelayProcess) => Promise<void>,
): Promise<void> {
  const relay = await startRelay(kc, args);
  try {
    await fn(relay);
  } finally {
    assert.equal(await relay.stop("SIGINT"), 0, relay.err.join("\n"));
  }
  assert.deepEqual(await agentJobs(kc), [], "agent Job left behind");
}

Deno.test({
  name: "compat: krelay's --patch (JSON) moves the agent, labels it and selects its node",
  ...opts,
}, async () => {
  const { kc, pod } = await prepare();
  const patch = JSON.stringify({
    metadata: { namespace: AGENT_NS, labels: { team: "x" } },
    spec: { nodeSelector: { "relay-compat": "chosen" } },
  });
  await withRelay(kc, ["-n", NS, "--patch", patch, `pod/${pod}`, ":80"], async (r) => {
    assert.equal((await curl(`http://127.0.0.1:${r.ports[0]}/`)).trim(), pod);
    const { jobs, pods } = await agentObjects(kc);
    assert.equal(jobs.length, 1, "the agent Job is in the patch's namespace");
    assert.equal(jobs[0].metadata.labels?.team, "x");
    assert.equal(jobs[0].spec.template.metadata.labels?.team, "x");
    assert.deepEqual(jobs[0].spec.template.spec.nodeSelector, { "relay-compat": "chosen" });
    assert.equal(pods.length, 1);
    assert.equal(pods[0].metadata.labels?.team, "x");
    assert.equal(pods[0].spec.nodeName, "kwok-node-1", "scheduled by the node selector");
    assert.ok(
      r.err.some((l) => l === `Starting agent in namespace ${AGENT_NS}…`),
      r.err.join("\n"),
    );
    assert.ok(!r.err.some((l) => /deprecated/.test(l)), "the Pod shape is not deprecated");
  });
});

Deno.test({
  name: "compat: --patch-file in YAML (generateName, labels, annotations, node selector)",
  ...opts,
}, async () => {
  const { kc, pod } = await prepare();
  const file = await Deno.makeTempFile({ suffix: ".yaml" });
  await Deno.writeTextFile(
    file,
    [
      "metadata:",
      `  namespace: ${AGENT_NS}`,
      "  generateName: compat-",
      "  labels:",
      "    team: y",
      "  annotations:",
      "    note: from-yaml",
      "spec:",
      "  nodeSelector:",
      "    relay-compat: chosen",
      "",
    ].join("\n"),
  );
  try {
    await withRelay(kc, ["-n", NS, "--patch-file", file, `pod/${pod}`, ":80"], async (r) => {
      assert.equal((await curl(`http://127.0.0.1:${r.ports[0]}/`)).trim(), pod);
      const { jobs, pods } = await agentObjects(kc);
      assert.equal(jobs.length, 1);
      assert.match(jobs[0].metadata.name, /^compat-/);
      assert.equal(pods[0].metadata.labels?.team, "y");
      assert.equal(pods[0].metadata.annotations?.note, "from-yaml");
      assert.equal(
        pods[0].metadata.labels?.["app.kubernetes.io/name"],
        "kubectl-relay-agent",
        "our label stays",
      );
      assert.deepEqual(pods[0].spec.nodeSelector, { "relay-compat": "chosen" });
      assert.equal(pods[0].spec.nodeName, "kwok-node-1");
    });
  } finally {
    await Deno.remove(file);
  }
});

Deno.test({
  name: "compat: --server.namespace contradicting the patch's namespace: exit 1, nothing created",
  ...opts,
}, async () => {
  const { kc, pod } = await prepare();
  const res = await runRelay(kc, [
    "-n",
    NS,
    "--server.namespace",
    "default",
    "--patch",
    `{"metadata":{"namespace":"${AGENT_NS}"}}`,
    `pod/${pod}`,
    ":80",
  ]);
  assert.equal(res.code, 1, res.stderr);
  assert.equal(
    res.stderr.trim(),
    `error: --server.namespace "default" contradicts metadata.namespace "${AGENT_NS}" in --patch: the agent runs in one namespace; give it once (or the same in both)`,
  );
  assert.equal(res.stdout, "");
  assert.deepEqual(await agentJobs(kc), []);
  // The same namespace in both is no contradiction.
  await withRelay(kc, [
    "-n",
    NS,
    "--server.namespace",
    AGENT_NS,
    "-p",
    `{"metadata":{"namespace":"${AGENT_NS}"}}`,
    `pod/${pod}`,
    ":80",
  ], async (r) => {
    assert.equal((await curl(`http://127.0.0.1:${r.ports[0]}/`)).trim(), pod);
    assert.equal((await agentObjects(kc)).jobs.length, 1);
  });
});

Deno.test({
  name: "compat: --idle-timeout=15s in the patch: SIGKILLed client → agent exits, Job gone by TTL",
  ...opts,
}, async () => {
  const { kc, pod } = await prepare();
  // Container args written for krelay's server (its container name, its flag).
  const patch = JSON.stringify({
    metadata: { namespace: AGENT_NS },
    spec: { containers: [{ name: "krelay-server", args: ["--idle-timeout=15s"] }] },
  });
  const relay = await startRelay(kc, ["-n", NS, "--patch", patch, `pod/${pod}`, ":80"]);
  assert.equal((await curl(`http://127.0.0.1:${relay.ports[0]}/`)).trim(), pod);
  const before = await agentObjects(kc);
  assert.equal(before.jobs.length, 1);
  // The patch's args come after the agent's own; the last --idle-* wins.
  const args = before.pods[0].spec.containers[0].args ?? [];
  assert.deepEqual(args.slice(-1), ["--idle-timeout=15s"]);
  assert.equal(args[0], "--listen");
  assert.equal(await relay.stop("SIGKILL"), 137);
  const t0 = performance.now();
  let completed = false;
  let gone = false;
  while (!gone && performance.now() - t0 < 60_000) {
    await sleep(500);
    const { jobs } = await agentObjects(kc);
    if (jobs.some((j) => (j.status?.succeeded ?? 0) > 0)) completed = true;
    gone = jobs.length === 0;
  }
  const secs = (performance.now() - t0) / 1000;
  console.log(`agent Job gone ${secs.toFixed(1)} s after its client was SIGKILLed`);
  assert.ok(completed, "the agent exited by itself (Job complete) before the Job went away");
  assert.ok(gone, "Job removed within 60 s (idle timeout 15 s + TTL 10 s)");
  assert.ok(secs >= 14, `the agent waited its idle timeout (${secs.toFixed(1)} s)`);
  assert.deepEqual(await agentJobs(kc), []);
});

Deno.test({
  name: "compat: proxy -l 127.0.0.1:0 prints the bound port; curl through it",
  ...opts,
}, async () => {
  const { kc } = await prepare();
  const relay = await startRelay(kc, ["proxy", "-l", "127.0.0.1:0"], { forwardLines: 0 });
  try {
    const line = await relay.waitFor(/^Proxy listening on /, 90_000);
    const m = /^Proxy listening on 127\.0\.0\.1:(\d+) \(SOCKS5, HTTP CONNECT\)$/.exec(line);
    assert.ok(m && Number(m[1]) > 0, line);
    const pods = await podNames(kc, "app=web");
    const out = await curlNoProxy(
      ["--socks5-hostname", `127.0.0.1:${m[1]}`, `http://web.${NS}.svc.cluster.local:8080/`],
      30,
    );
    assert.equal(out.code, 0, out.stderr);
    assert.ok(pods.includes(new TextDecoder().decode(out.stdout).trim()));
  } finally {
    assert.equal(await relay.stop("SIGINT"), 0, relay.err.join("\n"));
  }
  assert.deepEqual(await agentJobs(kc), []);
});

Deno.test({
  name: "compat: -V, and krelay flags we do not support say what to use",
  ...opts,
}, async () => {
  const kc = await setup();
  const v = await runRelay(kc, ["-V"]);
  assert.equal(v.code, 0);
  assert.ok(JSON.parse(v.stdout).clientVersion);
  const cases: [string[], RegExp][] = [
    [
      ["--server.pull-policy", "Always", "ip/127.0.0.1", "80"],
      /^error: flag --server\.pull-policy is not supported by kubectl relay: set it with --patch/,
    ],
    [["--logtostderr", "ip/127.0.0.1", "80"], /^error: flag --logtostderr is not supported.*-v N/],
    [["--listen", "127.0.0.1:0", "ip/127.0.0.1", "80"], /^error: --listen is a flag of/],
  ];
  for (const [args, re] of cases) {
    const res = await runRelay(kc, args);
    assert.equal(res.code, 1, args.join(" "));
    assert.match(res.stderr, re);
  }
  assert.deepEqual(await agentJobs(kc), []);
});
