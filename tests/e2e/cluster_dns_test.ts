/**
 * End-to-end against the cluster DNS add-on (kube-system/coredns behind the kube-dns Service, as
 * on a kubeadm cluster): UDP to it with real `dig`, through `deploy/` and `svc/` targets; and a
 * `host/` target resolved by the agent's resolver (its resolv.conf points at kube-dns).
 */
import assert from "node:assert/strict";
import { sharedCluster } from "../cluster/cluster.ts";
import type { ClusterState } from "../cluster/cluster.ts";
import { agentJobs, kubectl, type RelayProcess, startRelay } from "../_lib/relay.ts";
import { requireTools, runCmd } from "../cluster/runtime/_testlib.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
const NAME = "kubernetes.default.svc.cluster.local";

async function withRelay(
  args: string[],
  fn: (r: RelayProcess, kc: string) => Promise<void>,
): Promise<void> {
  await requireTools("dig", "curl");
  const kc = (await sharedCluster()).kubeconfig;
  const relay = await startRelay(kc, args);
  try {
    await fn(relay, kc);
  } finally {
    assert.equal(await relay.stop("SIGINT"), 0, relay.err.join("\n"));
  }
  assert.deepEqual(await agentJobs(kc), [], "agent Job left behind");
}

/** The apiserver Service's cluster IP (what cluster DNS answers for kubernetes.default). */
async function apiServiceIP(kc: string): Promise<string> {
  return (await kubectl(kc, "get", "svc", "kubernetes", "-o", "jsonpath={.spec.clusterIP}"))
    .trim();
}

async function dig(port: number, ...extra: string[]): Promise<string> {
  const r = await runCmd("dig", [
    "@127.0.0.1",
    "-p",
    String(port),
    NAME,
    "A",
    "+short",
    "+time=3",
    "+tries=2",
    ...extra,
  ]);
  assert.equal(r.code, 0, `dig: ${r.stdout}${r.stderr}`);
  return r.stdout.trim();
}

Deno.test({
  name: "e2e cluster DNS: deploy/coredns :53@udp answers dig for kubernetes.default",
  ...opts,
}, async () => {
  // kubeadm names the Deployment coredns (its pods carry k8s-app=kube-dns).
  await withRelay(["-n", "kube-system", "deploy/coredns", ":53@udp"], async (r, kc) => {
    assert.match(r.out[0], /^Forwarding from 127\.0\.0\.1:\d+ -> 53 \(udp\)$/);
    assert.equal(await dig(r.ports[0]), await apiServiceIP(kc));
  });
});

Deno.test({
  name: "e2e cluster DNS: svc/kube-dns :53@udp and :dns-tcp answer dig (UDP, TCP)",
  ...opts,
}, async () => {
  await withRelay(["-n", "kube-system", "svc/kube-dns", ":53@udp"], async (r, kc) => {
    assert.equal(await dig(r.ports[0]), await apiServiceIP(kc));
    // A second query from another local port is a new flow through the cluster IP.
    assert.equal(await dig(r.ports[0]), await apiServiceIP(kc));
  });
  await withRelay(["-n", "kube-system", "svc/kube-dns", ":dns-tcp"], async (r, kc) => {
    assert.equal(await dig(r.ports[0], "+tcp"), await apiServiceIP(kc));
  });
});

Deno.test({
  name: "e2e cluster DNS: host/kubernetes.default is resolved by the agent through kube-dns",
  ...opts,
}, async () => {
  const cluster = await sharedCluster();
  const st = JSON.parse(await Deno.readTextFile(`${cluster.dir}/state.json`)) as ClusterState;
  await withRelay(["host/kubernetes.default", ":443"], async (r) => {
    // The apiserver's certificate names kubernetes.default: verify it, so the answer can only
    // come from the real apiserver behind the kubernetes Service.
    const port = r.ports[0];
    const res = await runCmd("curl", [
      "-sS",
      "--max-time",
      "10",
      "--cacert",
      st.caCert,
      "--resolve",
      `kubernetes.default:${port}:127.0.0.1`,
      `https://kubernetes.default:${port}/version`,
    ]);
    assert.equal(res.code, 0, res.stderr);
    assert.equal(JSON.parse(res.stdout).gitVersion, "v1.36.3");
  });
});
