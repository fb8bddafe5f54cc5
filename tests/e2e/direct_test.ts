/**
 * End-to-end: `--direct` (no agent; a port-forward to the target pod per connection), chosen by
 * hand or automatically for a user without the right to create the agent Job, against a server
 * that listens only on the pod's localhost (the harness plays ports named `local-*` so).
 */
import assert from "node:assert/strict";
import { sharedCluster } from "../cluster/cluster.ts";
import { setup } from "./fixtures.ts";
import {
  agentJobs,
  curl,
  kubectl,
  podNames,
  type RelayProcess,
  runRelay,
  startRelay,
} from "../_lib/relay.ts";
import { applyRolledOut } from "../_lib/workloads.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
const NS = "relay-direct";

const MANIFEST = `
apiVersion: v1
kind: Namespace
metadata:
  name: ${NS}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: lonely
  namespace: ${NS}
spec:
  replicas: 1
  selector:
    matchLabels: { app: lonely }
  template:
    metadata:
      labels: { app: lonely }
    spec:
      containers:
        - name: web
          image: relay-test/http
          ports:
            # A server bound to 127.0.0.1 inside the pod: only a port-forward reaches it.
            - { name: local-http, containerPort: 8080, protocol: TCP }
---
apiVersion: v1
kind: Service
metadata:
  name: lonely
  namespace: ${NS}
spec:
  selector: { app: lonely }
  ports:
    - { name: http, port: 80, targetPort: local-http, protocol: TCP }
`;

let ready: Promise<string> | undefined;

/** The shared cluster with the `lonely` deployment ready; returns the admin kubeconfig. */
function prepare(): Promise<string> {
  ready ??= (async () => {
    const kc = await setup();
    await applyRolledOut(kc, NS, MANIFEST, ["deploy/lonely"]);
    return kc;
  })();
  return ready;
}

async function lonelyPod(kc: string): Promise<string> {
  const pods = await podNames(kc, NS, "app=lonely");
  assert.equal(pods.length, 1, pods.join(" "));
  return pods[0];
}

/** Runs a relay, checks there is no agent Job while it runs, then Ctrl-C: exit 0, none after. */
async function withRelay(
  kc: string,
  args: string[],
  fn: (r: RelayProcess) => Promise<void>,
): Promise<void> {
  const admin = await prepare();
  const relay = await startRelay(kc, args);
  try {
    await fn(relay);
    assert.deepEqual(await agentJobs(admin), [], "no agent Job in direct mode");
  } finally {
    assert.equal(await relay.stop("SIGINT"), 0, relay.err.join("\n"));
  }
  assert.deepEqual(await agentJobs(admin), []);
  assert.ok(!relay.err.some((l) => /Starting agent/.test(l)), relay.err.join("\n"));
}

Deno.test({
  name: "direct: --direct pod/ reaches a server listening only on the pod's localhost",
  ...opts,
}, async () => {
  const kc = await prepare();
  const pod = await lonelyPod(kc);
  await withRelay(kc, ["-n", NS, "--direct", `pod/${pod}`, ":8080", ":local-http"], async (r) => {
    assert.match(r.out[0], /^Forwarding from 127\.0\.0\.1:\d+ -> 8080$/);
    for (const port of r.ports) {
      assert.equal((await curl(`http://127.0.0.1:${port}/`)).trim(), pod);
    }
    await r.waitFor(new RegExp(`^Handling connection for ${r.ports[0]}$`));
    // Several connections at once, each its own port-forward.
    const bodies = await Promise.all(
      Array.from({ length: 5 }, () => curl(`http://127.0.0.1:${r.ports[0]}/`)),
    );
    assert.deepEqual(bodies.map((b) => b.trim()), Array(5).fill(pod));
  });
});

Deno.test({
  name: "direct: the same target without --direct is refused, and the error suggests --direct",
  ...opts,
}, async () => {
  const kc = await prepare();
  const pod = await lonelyPod(kc);
  const relay = await startRelay(kc, ["-n", NS, `pod/${pod}`, ":8080"]);
  try {
    await curl(`http://127.0.0.1:${relay.ports[0]}/`).then(
      () => assert.fail("the agent cannot reach a localhost-only server"),
      () => {},
    );
    const line = await relay.waitFor(/^error: dial tcp/);
    assert.match(
      line,
      new RegExp(
        `^error: dial tcp [0-9.]+:8080: connection refused \\(pod ${pod} declares port 8080: if its server listens only on localhost, use --direct\\)$`,
      ),
    );
  } finally {
    assert.equal(await relay.stop("SIGINT"), 0);
  }
  assert.deepEqual(await agentJobs(kc), []);
});

Deno.test({
  name: "direct: deploy/ and svc/ follow the ready pod across a rollout",
  ...opts,
}, async () => {
  const kc = await prepare();
  const before = await lonelyPod(kc);
  await withRelay(kc, ["-n", NS, "--direct", "deploy/lonely", ":local-http"], async (r) => {
    assert.match(r.out[0], / -> 8080$/);
    assert.equal((await curl(`http://127.0.0.1:${r.ports[0]}/`)).trim(), before);
    await kubectl(kc, "-n", NS, "rollout", "restart", "deploy/lonely");
    await kubectl(kc, "-n", NS, "rollout", "status", "deploy/lonely", "--timeout=90s");
    // The old pod may still be terminating: wait (bounded) until only the new one is left.
    let after = before;
    for (let i = 0; i < 60 && after === before; i++) {
      const pods = await podNames(kc, NS, "app=lonely");
      if (pods.length === 1) after = pods[0];
      else await new Promise((res) => setTimeout(res, 500));
    }
    assert.notEqual(after, before, "a new pod after the rollout");
    // New connections go to the new pod; the relay kept running.
    let body = "";
    for (let i = 0; i < 20 && body !== after; i++) {
      body = (await curl(`http://127.0.0.1:${r.ports[0]}/`).catch(() => "")).trim();
      if (body !== after) await new Promise((res) => setTimeout(res, 500));
    }
    assert.equal(body, after);
  });
  // A Service with a cluster IP goes to a pod of its selector, on the target port.
  const pod = await lonelyPod(kc);
  await withRelay(kc, ["-n", NS, "--direct", "svc/lonely", ":80"], async (r) => {
    assert.equal((await curl(`http://127.0.0.1:${r.ports[0]}/`)).trim(), pod);
  });
});

Deno.test({
  name: "direct: a user without Job rights (pods/portforward + read pods) gets direct mode",
  ...opts,
}, async () => {
  const kc = await prepare();
  const cluster = await sharedCluster();
  const pod = await lonelyPod(kc);
  const rbac = await Deno.makeTempFile({ suffix: ".yaml" });
  await Deno.writeTextFile(
    rbac,
    `
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: relay-direct-only
  namespace: ${NS}
rules:
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["get", "list", "watch"]
  - apiGroups: [""]
    resources: ["pods/portforward"]
    verbs: ["get", "create"]
`,
  );
  const user = await cluster.createUser("relay-direct-user", rbac);
  await Deno.remove(rbac);
  await withRelay(user, ["-n", NS, `pod/${pod}`, ":8080"], async (r) => {
    assert.ok(
      r.err.some((l) =>
        l ===
          'Direct mode: you cannot create the agent\'s Job in namespace "default", so each connection is a port-forward to the target pod (as kubectl port-forward does)'
      ),
      r.err.join("\n"),
    );
    assert.equal((await curl(`http://127.0.0.1:${r.ports[0]}/`)).trim(), pod);
  });
  // What direct mode cannot do is a clear error for this user, with nothing created.
  const udp = await runRelay(user, ["-n", NS, `pod/${pod}`, ":53@udp"]);
  assert.equal(udp.code, 1);
  assert.match(udp.stderr, /^error: forbidden: you cannot .* \(needed to run the agent;/m);
});

Deno.test({
  name: "direct: UDP, host/, ip/ and proxy with --direct are clear errors",
  ...opts,
}, async () => {
  const kc = await prepare();
  const pod = await lonelyPod(kc);
  const cases: [string[], RegExp][] = [
    [["-n", NS, "--direct", `pod/${pod}`, ":53@udp"], /^error: UDP needs the agent \(:53@udp\)/],
    [["--direct", "host/web.default", "80"], /^error: host\/ targets need the agent/],
    [["--direct", "ip/127.0.0.1", "80"], /^error: ip\/ targets need the agent/],
    [["proxy", "--direct"], /^error: proxy needs the agent/],
  ];
  for (const [args, re] of cases) {
    const res = await runRelay(kc, args);
    assert.equal(res.code, 1, `${args.join(" ")}: ${res.stderr}`);
    assert.match(res.stderr, re, args.join(" "));
  }
  assert.deepEqual(await agentJobs(kc), []);
});
