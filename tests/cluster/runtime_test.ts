/**
 * The pod runtime (tests/cluster/runtime) against the real control plane, with real `kubectl`,
 * `curl`, `dig` and `redis-cli`: pods serve on their IPs, the apiserver's port-forward reaches
 * them, rollouts give new pods, Service cluster IPs forward, the cluster DNS answers, and agent
 * pods run agent.ts (resolving cluster names) and die with their pod.
 */

import assert from "node:assert/strict";
import { sharedCluster } from "./cluster.ts";
import { dig, digFull, requireTools, runCmd } from "./runtime/_testlib.ts";
import { encodeHeader } from "../../src/protocol/header.ts";
import { encodeAuth, formatToken } from "../../src/protocol/auth.ts";
import { probeKwokForward } from "./runtime/kwok_probe.ts";
import { lookupA } from "./dns_probe.ts";
import { freshSocket } from "../_lib/traffic.ts";
import { poll } from "../_lib/poll.ts";

const REPO = new URL("../../", import.meta.url).pathname;
const HAVE_AGENT = (() => {
  try {
    Deno.statSync(`${REPO}agent.ts`);
    return true;
  } catch {
    return false;
  }
})();

async function kubectl(kc: string, ...args: string[]): Promise<string> {
  const r = await runCmd("kubectl", ["--kubeconfig", kc, "--request-timeout=20s", ...args]);
  assert.equal(r.code, 0, `kubectl ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

interface PodInfo {
  name: string;
  ip: string;
  ready: boolean;
}

async function pods(kc: string, ns: string, selector: string): Promise<PodInfo[]> {
  const list = JSON.parse(await kubectl(kc, "-n", ns, "get", "pods", "-l", selector, "-o", "json"));
  return (list.items as {
    metadata: { name: string; deletionTimestamp?: string };
    status: { podIP?: string; conditions?: { type: string; status: string }[] };
  }[])
    .filter((p) => !p.metadata.deletionTimestamp)
    .map((p) => ({
      name: p.metadata.name,
      ip: p.status.podIP ?? "",
      ready: (p.status.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True"),
    }));
}

async function readyPods(kc: string, ns: string, selector: string, n: number): Promise<PodInfo[]> {
  return await poll(`${n} ready pods ${selector}`, 60000, async () => {
    const ps = await pods(kc, ns, selector);
    return ps.length === n && ps.every((p) => p.ready) ? ps : null;
  });
}

/** `kubectl port-forward TARGET :PORT`; returns the local port and a stop function. */
async function portForward(
  kc: string,
  ns: string,
  target: string,
  port: number,
): Promise<{ port: number; stop: () => Promise<void> }> {
  const child = new Deno.Command("kubectl", {
    args: ["--kubeconfig", kc, "-n", ns, "port-forward", target, `:${port}`],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const errText = new Response(child.stderr).text();
  const reader = child.stdout.getReader();
  let seen = "";
  let local = 0;
  try {
    while (!local) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`kubectl port-forward exited: ${seen}`);
      seen += new TextDecoder().decode(value);
      const m = seen.match(/Forwarding from 127\.0\.0\.1:(\d+) ->/);
      if (m) local = Number(m[1]);
    }
  } catch (e) {
    child.kill("SIGKILL");
    await child.status;
    throw new Error(`${e} ${await errText}`);
  } finally {
    reader.releaseLock();
  }
  const drain = child.stdout.pipeTo(new WritableStream());
  return {
    port: local,
    stop: async () => {
      try {
        child.kill("SIGTERM");
      } catch {
        // exited
      }
      await child.status;
      await drain.catch(() => {});
      await errText;
    },
  };
}

async function curl(url: string): Promise<string> {
  const r = await runCmd("curl", ["-sS", "--max-time", "10", url]);
  assert.equal(r.code, 0, `curl ${url}: ${r.stderr}`);
  return r.stdout;
}

/** curl's body, or null if the request failed. */
async function tryCurl(url: string): Promise<string | null> {
  const r = await runCmd("curl", ["-sS", "--max-time", "5", url]);
  return r.code === 0 ? r.stdout : null;
}

const NS = `rt-${crypto.randomUUID().slice(0, 6)}`;
let setupDone: Promise<string> | undefined;

/** Namespace with: deploy web (2 replicas, TCP 80 "http") + Service web (8080→http),
 * deploy dns (UDP 53) + Service dns (53/UDP), a redis pod, ExternalName + headless services. */
function setup(): Promise<string> {
  setupDone ??= (async () => {
    await requireTools("curl", "dig", "redis-cli", "redis-server");
    const c = await sharedCluster();
    const kc = c.kubeconfig;
    const manifest = [
      { apiVersion: "v1", kind: "Namespace", metadata: { name: NS } },
      {
        apiVersion: "apps/v1",
        kind: "Deployment",
        metadata: { name: "web", namespace: NS },
        spec: {
          replicas: 2,
          selector: { matchLabels: { app: "web" } },
          template: {
            metadata: { labels: { app: "web" } },
            spec: {
              containers: [{
                name: "web",
                image: "relay-test/http",
                ports: [{ name: "http", containerPort: 80 }],
              }],
            },
          },
        },
      },
      {
        apiVersion: "v1",
        kind: "Service",
        metadata: { name: "web", namespace: NS },
        spec: {
          selector: { app: "web" },
          ports: [{ name: "http", port: 8080, targetPort: "http" }],
        },
      },
      {
        apiVersion: "v1",
        kind: "Service",
        metadata: { name: "web-hl", namespace: NS },
        spec: { clusterIP: "None", selector: { app: "web" }, ports: [{ port: 80 }] },
      },
      {
        apiVersion: "v1",
        kind: "Service",
        metadata: { name: "web-ext", namespace: NS },
        spec: { type: "ExternalName", externalName: `web.${NS}.svc.cluster.local` },
      },
      {
        apiVersion: "apps/v1",
        kind: "Deployment",
        metadata: { name: "dns", namespace: NS },
        spec: {
          replicas: 1,
          selector: { matchLabels: { app: "dns" } },
          template: {
            metadata: { labels: { app: "dns" } },
            spec: {
              containers: [{
                name: "dns",
                image: "relay-test/dns",
                ports: [{ name: "dns", containerPort: 53, protocol: "UDP" }],
              }],
            },
          },
        },
      },
      {
        apiVersion: "v1",
        kind: "Service",
        metadata: { name: "dns", namespace: NS },
        spec: {
          selector: { app: "dns" },
          ports: [{ name: "dns", port: 53, targetPort: "dns", protocol: "UDP" }],
        },
      },
      {
        apiVersion: "v1",
        kind: "Pod",
        metadata: { name: "redis", namespace: NS, labels: { app: "redis" } },
        spec: {
          containers: [{
            name: "redis",
            image: "redis:7",
            ports: [{ name: "redis", containerPort: 6379 }],
          }],
        },
      },
    ];
    const file = await Deno.makeTempFile({ suffix: ".json" });
    await Deno.writeTextFile(
      file,
      JSON.stringify({ apiVersion: "v1", kind: "List", items: manifest }),
    );
    try {
      await kubectl(kc, "apply", "-f", file);
    } finally {
      await Deno.remove(file);
    }
    await readyPods(kc, NS, "app=web", 2);
    await readyPods(kc, NS, "app=dns", 1);
    await readyPods(kc, NS, "app=redis", 1);
    return kc;
  })();
  return setupDone;
}

const opts = { sanitizeResources: true, sanitizeOps: true };

Deno.test({
  name: "runtime: port-forward to a pod and to deploy/web answers the pod's name",
  ...opts,
}, async () => {
  const kc = await setup();
  const ps = await pods(kc, NS, "app=web");
  const pf = await portForward(kc, NS, `pod/${ps[0].name}`, 80);
  try {
    assert.equal(await curl(`http://127.0.0.1:${pf.port}/`), `${ps[0].name}\n`);
  } finally {
    await pf.stop();
  }
  const pf2 = await portForward(kc, NS, "deploy/web", 80);
  try {
    const name = (await curl(`http://127.0.0.1:${pf2.port}/`)).trim();
    assert.ok(ps.some((p) => p.name === name), `${name} not one of ${ps.map((p) => p.name)}`);
  } finally {
    await pf2.stop();
  }
});

Deno.test(
  { name: "runtime: pods serve on their own IPs (HTTP, real dig, redis-cli)", ...opts },
  async () => {
    const kc = await setup();
    const [web] = await pods(kc, NS, "app=web");
    assert.match(web.ip, /^127\./);
    assert.equal(await curl(`http://${web.ip}/`), `${web.name}\n`);
    const [dnsPod] = await pods(kc, NS, "app=dns");
    assert.deepEqual(await dig(dnsPod.ip, 53, "whoami.test.relay", "TXT"), [`"${dnsPod.name}"`]);
    assert.deepEqual(await dig(dnsPod.ip, 53, "whoami.test.relay", "TXT", ["+tcp"]), [
      `"${dnsPod.name}"`,
    ]);
    const [redis] = await pods(kc, NS, "app=redis");
    const key = crypto.randomUUID();
    const set = await runCmd("redis-cli", ["-h", redis.ip, "-p", "6379", "SET", "k", key]);
    assert.equal(set.stdout.trim(), "OK", set.stderr);
    const get = await runCmd("redis-cli", ["-h", redis.ip, "-p", "6379", "GET", "k"]);
    assert.equal(get.stdout.trim(), key);
  },
);

Deno.test(
  { name: "runtime: Service cluster IPs forward TCP and UDP to ready pods", ...opts },
  async () => {
    const kc = await setup();
    const ps = await pods(kc, NS, "app=web");
    const ip =
      (await kubectl(kc, "-n", NS, "get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}")).trim();
    assert.match(ip, /^127\./);
    // Endpoints reach the Service's forwarder after the propagation delay (about 1 s).
    await poll("the Service to answer", 10000, async () => (await tryCurl(`http://${ip}:8080/`)));
    // kube-proxy picks an endpoint at random per connection: both pods answer (bounded).
    const seen = new Set<string>();
    for (let i = 0; i < 30 && seen.size < 2; i++) {
      seen.add((await curl(`http://${ip}:8080/`)).trim());
    }
    assert.deepEqual([...seen].sort(), ps.map((p) => p.name).sort(), "both pods answer");
    const dnsIP =
      (await kubectl(kc, "-n", NS, "get", "svc", "dns", "-o", "jsonpath={.spec.clusterIP}")).trim();
    const [dnsPod] = await pods(kc, NS, "app=dns");
    // This Service's endpoints propagate on their own schedule too (refused until they have).
    const answer = await poll(
      "the dns Service to answer",
      10000,
      () => dig(dnsIP, 53, "whoami.test.relay", "TXT"),
    );
    assert.deepEqual(answer, [`"${dnsPod.name}"`]);
  },
);

Deno.test({
  name: "runtime: cluster DNS answers services, headless, ExternalName; NXDOMAIN else",
  ...opts,
}, async () => {
  const kc = await setup();
  const c = await sharedCluster();
  // The cluster DNS is the kube-dns Service (coredns pods behind it).
  const [dnsIP, dnsPort] = [c.clusterDNS, 53];
  assert.equal(
    await kubectl(
      kc,
      "-n",
      "kube-system",
      "get",
      "svc",
      "kube-dns",
      "-o",
      "jsonpath={.spec.clusterIP}",
    ),
    dnsIP,
  );
  const svcIP =
    (await kubectl(kc, "-n", NS, "get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}")).trim();
  assert.deepEqual(await dig(dnsIP, dnsPort, `web.${NS}.svc.cluster.local`, "A"), [svcIP]);
  assert.deepEqual(await dig(dnsIP, dnsPort, `web.${NS}.svc.cluster.local`, "A", ["+tcp"]), [
    svcIP,
  ]);
  const podIPs = (await pods(kc, NS, "app=web")).map((p) => p.ip).sort();
  // Headless answers come from the endpoints, which reach the DNS after the propagation delay.
  const headless = async () =>
    (await dig(dnsIP, dnsPort, `web-hl.${NS}.svc.cluster.local`, "A")).sort();
  await poll(
    "headless answer",
    5000,
    async () => JSON.stringify(await headless()) === JSON.stringify(podIPs) ? true : null,
  );
  assert.deepEqual(await headless(), podIPs);
  assert.deepEqual(await dig(dnsIP, dnsPort, `web-ext.${NS}.svc.cluster.local`, "A"), [
    `web.${NS}.svc.cluster.local.`,
    svcIP,
  ]);
  assert.match(
    await digFull(dnsIP, dnsPort, `nope.${NS}.svc.cluster.local`, "A"),
    /status: NXDOMAIN/,
  );
  assert.match(await digFull(dnsIP, dnsPort, "example.com", "A"), /status: NXDOMAIN/);
});

Deno.test({
  name: "runtime: kwok knows a Ready pod's forwards (probe: found / missing)",
  ...opts,
}, async () => {
  const kc = await setup();
  const c = await sharedCluster();
  const st = JSON.parse(await Deno.readTextFile(`${c.dir}/state.json`)) as {
    ports: { kwok: number };
  };
  const kwok = { hostname: "127.0.0.1", port: st.ports.kwok };
  const [web] = await pods(kc, NS, "app=web");
  assert.equal(await probeKwokForward(kwok, NS, web.name, 80), "found");
  assert.equal(await probeKwokForward(kwok, NS, web.name, 81), "missing");
  assert.equal(await probeKwokForward(kwok, NS, "no-such-pod", 80), "missing");
});

Deno.test({
  name: "runtime: rollout restart gives new pods (new names) behind deploy/web",
  ...opts,
}, async () => {
  const kc = await setup();
  const before = (await pods(kc, NS, "app=web")).map((p) => p.name);
  await kubectl(kc, "-n", NS, "rollout", "restart", "deploy/web");
  await kubectl(kc, "-n", NS, "rollout", "status", "deploy/web", "--timeout=60s");
  const after = await poll("old pods gone", 30000, async () => {
    const ps = await pods(kc, NS, "app=web");
    return ps.length === 2 && ps.every((p) => p.ready && !before.includes(p.name)) ? ps : null;
  });
  const pf = await portForward(kc, NS, "deploy/web", 80);
  try {
    const name = (await curl(`http://127.0.0.1:${pf.port}/`)).trim();
    assert.ok(
      after.some((p) => p.name === name),
      `${name} is not a new pod (${after.map((p) => p.name)})`,
    );
    assert.ok(!before.includes(name));
  } finally {
    await pf.stop();
  }
  // Once the removal of the old endpoints has propagated, the Service reaches only new pods.
  const ip = (await kubectl(kc, "-n", NS, "get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"))
    .trim();
  let newInARow = 0;
  for (let i = 0; i < 60 && newInARow < 5; i++) {
    const name = (await tryCurl(`http://${ip}:8080/`))?.trim();
    newInARow = name && after.some((p) => p.name === name) ? newInARow + 1 : 0;
    if (newInARow === 0) await new Promise((r) => setTimeout(r, 200));
  }
  assert.equal(newInARow, 5, "the Service answers from new pods only");
});

async function readN(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const r = await conn.read(out.subarray(got));
    if (r === null) throw new Error(`EOF after ${got} of ${n} bytes`);
    got += r;
  }
  return out;
}

/**
 * Read one HTTP/1.x response with a Content-Length (not until EOF: kwok's port-forward does not
 * pass the server's close on while our side is still open).
 */
async function readHttpResponse(conn: Deno.Conn): Promise<{ head: string; body: string }> {
  let text = "";
  const buf = new Uint8Array(4096);
  for (;;) {
    const i = text.indexOf("\r\n\r\n");
    if (i >= 0) {
      const len = Number(text.slice(0, i).match(/^content-length:\s*(\d+)/im)?.[1] ?? NaN);
      assert.ok(Number.isFinite(len), `no Content-Length in ${text.slice(0, i)}`);
      if (text.length - i - 4 >= len) {
        return { head: text.slice(0, i), body: text.slice(i + 4, i + 4 + len) };
      }
    }
    const r = await conn.read(buf);
    if (r === null) throw new Error(`EOF inside the response: ${text}`);
    text += new TextDecoder().decode(buf.subarray(0, r));
  }
}

Deno.test({
  name: "runtime: cluster DNS is a workload (kube-system/coredns behind kube-dns)",
  ...opts,
}, async () => {
  const kc = await setup();
  const c = await sharedCluster();
  // A replica may still be starting (e.g. right after the cluster came up), as on any cluster.
  await kubectl(kc, "-n", "kube-system", "rollout", "status", "deploy/coredns", "--timeout=90s");
  const deploy = JSON.parse(
    await kubectl(kc, "-n", "kube-system", "get", "deploy", "coredns", "-o", "json"),
  );
  assert.equal(deploy.spec.replicas, 2);
  assert.equal(deploy.status.readyReplicas, 2);
  assert.deepEqual(deploy.spec.selector.matchLabels, { "k8s-app": "kube-dns" });
  assert.match(deploy.spec.template.spec.containers[0].image, /coredns/);
  const svc = JSON.parse(
    await kubectl(kc, "-n", "kube-system", "get", "svc", "kube-dns", "-o", "json"),
  );
  assert.equal(svc.spec.clusterIP, c.clusterDNS);
  assert.deepEqual(
    svc.spec.ports.map((p: { name: string; port: number; protocol: string }) =>
      `${p.name} ${p.port}/${p.protocol}`
    ),
    ["dns 53/UDP", "dns-tcp 53/TCP", "metrics 9153/TCP"],
  );
  // Each coredns pod serves the cluster zone on its own IP (UDP and TCP).
  const apiIP = (await kubectl(kc, "get", "svc", "kubernetes", "-o", "jsonpath={.spec.clusterIP}"))
    .trim();
  for (const p of await pods(kc, "kube-system", "k8s-app=kube-dns")) {
    assert.deepEqual(await dig(p.ip, 53, "kubernetes.default.svc.cluster.local", "A"), [apiIP]);
    assert.deepEqual(
      await dig(p.ip, 53, "kubernetes.default.svc.cluster.local", "A", ["+tcp"]),
      [apiIP],
    );
  }
});

Deno.test({
  name:
    "runtime: a coredns rollout does not break cluster DNS (new UDP flow / TCP connection per query)",
  ...opts,
}, async () => {
  const kc = await setup();
  const c = await sharedCluster();
  const apiIP = (await kubectl(kc, "get", "svc", "kubernetes", "-o", "jsonpath={.spec.clusterIP}"))
    .trim();
  const name = "kubernetes.default.svc.cluster.local";
  const before = (await pods(kc, "kube-system", "k8s-app=kube-dns")).map((p) => p.name);
  let done = false;
  const counts = { udp: { ok: 0, failed: 0 }, tcp: { ok: 0, failed: 0 } };
  const worker = async (transport: "udp" | "tcp") => {
    // Bounded: at most 2000 queries per worker, and the loop ends 3 s after the rollout.
    for (let i = 0; i < 2000 && !done; i++) {
      // Each query from a port never used before: a new flow (not a reused conntrack entry).
      const a = await lookupA(c.clusterDNS, 53, name, transport, 2000, freshSocket);
      if (a?.includes(apiIP)) counts[transport].ok++;
      else counts[transport].failed++;
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  const workers = [worker("udp"), worker("udp"), worker("tcp")];
  try {
    await kubectl(kc, "-n", "kube-system", "rollout", "restart", "deploy/coredns");
    await kubectl(kc, "-n", "kube-system", "rollout", "status", "deploy/coredns", "--timeout=90s");
    await poll("old coredns pods gone", 30000, async () => {
      const ps = await pods(kc, "kube-system", "k8s-app=kube-dns");
      return ps.length === 2 && ps.every((p) => p.ready && !before.includes(p.name)) ? true : null;
    });
    await new Promise((r) => setTimeout(r, 3000));
  } finally {
    done = true;
    await Promise.all(workers);
  }
  console.log(`coredns rollout: ${JSON.stringify(counts)}`);
  assert.ok(counts.udp.ok > 20 && counts.tcp.ok > 10, JSON.stringify(counts));
  assert.equal(counts.udp.failed + counts.tcp.failed, 0, JSON.stringify(counts));
});

/** A keep-alive GET on a raw connection: the body, or null if the connection ended. */
async function rawGet(conn: Deno.Conn): Promise<string | null> {
  try {
    await conn.write(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: pod\r\n\r\n"));
    return (await readHttpResponse(conn)).body.trim();
  } catch {
    return null; // EOF or reset
  }
}

Deno.test({
  name: "runtime: a deleted pod terminates as on a kubelet (grace period, then removed)",
  ...opts,
}, async () => {
  const kc = await setup();
  const pod = {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: "term", namespace: NS, labels: { app: "term" } },
    spec: {
      terminationGracePeriodSeconds: 30, // the harness caps it at 2 s
      containers: [{ name: "web", image: "relay-test/http", ports: [{ containerPort: 80 }] }],
    },
  };
  const file = await Deno.makeTempFile({ suffix: ".json" });
  await Deno.writeTextFile(file, JSON.stringify(pod));
  try {
    await kubectl(kc, "apply", "-f", file);
  } finally {
    await Deno.remove(file);
  }
  const [p] = await readyPods(kc, NS, "app=term", 1);
  const conn = await Deno.connect({ hostname: p.ip, port: 80 });
  try {
    assert.equal(await rawGet(conn), "term");
    const t0 = Date.now();
    await kubectl(kc, "-n", NS, "delete", "pod", "term", "--wait=false");
    const obj = JSON.parse(await kubectl(kc, "-n", NS, "get", "pod", "term", "-o", "json"));
    assert.ok(obj.metadata.deletionTimestamp, "the pod is Terminating");
    assert.equal(obj.status.phase, "Running", "its containers still run");
    // New connections are refused once the kubelet-like runtime has sent SIGTERM.
    await poll("new connections refused", 5000, async () => {
      try {
        (await Deno.connect({ hostname: p.ip, port: 80 })).close();
        return null;
      } catch (e) {
        return e instanceof Deno.errors.ConnectionRefused ? true : null;
      }
    });
    assert.equal(await rawGet(conn), "term", "the open connection is still served");
    await poll("pod object removed", 20000, async () => {
      const r = await runCmd("kubectl", ["--kubeconfig", kc, "-n", NS, "get", "pod", "term"]);
      return /NotFound/.test(r.stderr) ? true : null;
    });
    const ms = Date.now() - t0;
    assert.ok(ms >= 1500, `removed ${ms} ms after the delete: not before the grace period`);
    assert.equal(await rawGet(conn), null, "the connection ended with the kill");
  } finally {
    conn.close();
  }
});

Deno.test({
  name: "runtime: an agent Job pod runs agent.ts, resolves cluster names, dies with its pod",
  ignore: !HAVE_AGENT,
  ...opts,
}, async () => {
  const kc = await setup();
  const c = await sharedCluster();
  const token = crypto.getRandomValues(new Uint8Array(32));
  const job = {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: { name: "agent", namespace: NS },
    spec: {
      backoffLimit: 0,
      template: {
        metadata: { labels: { "app.kubernetes.io/name": "kubectl-relay-agent" } },
        spec: {
          restartPolicy: "Never",
          containers: [{
            name: "agent",
            image: "kubectl-relay-agent:test",
            args: ["--listen", "0.0.0.0:9527", "--idle-exit", "5m"],
            ports: [{ name: "tunnel", containerPort: 9527 }],
            env: [{ name: "KUBECTL_RELAY_TOKEN", value: formatToken(token) }],
          }],
        },
      },
    },
  };
  const file = await Deno.makeTempFile({ suffix: ".json" });
  await Deno.writeTextFile(file, JSON.stringify(job));
  try {
    await kubectl(kc, "apply", "-f", file);
  } finally {
    await Deno.remove(file);
  }
  const [agent] = await readyPods(kc, NS, "app.kubernetes.io/name=kubectl-relay-agent", 1);
  const pidFile = `${c.dir}/agents/${NS}_${agent.name}.pid`;
  const pid = Number((await Deno.readTextFile(pidFile)).trim());
  // resolv.conf as a kubelet writes it for dnsPolicy ClusterFirst: the kube-dns Service.
  assert.equal(
    await Deno.readTextFile(`${c.dir}/agents/${NS}_${agent.name}.resolv.conf`),
    `search ${NS}.svc.cluster.local svc.cluster.local cluster.local\nnameserver ${c.clusterDNS}\noptions ndots:5\n`,
  );
  const cmdline = (await Deno.readTextFile(`/proc/${pid}/cmdline`)).split("\0");
  assert.ok(cmdline.some((a) => a.endsWith("agent.ts")), cmdline.join(" "));
  assert.ok(cmdline.includes(`${agent.ip}:9527`), cmdline.join(" "));

  // Raw mode through the apiserver's port-forward: a short service name, resolved in-cluster.
  const pf = await portForward(kc, NS, `pod/${agent.name}`, 9527);
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: pf.port });
    try {
      await conn.write(encodeAuth(token));
      await conn.write(encodeHeader({
        requestId: crypto.randomUUID(),
        protocol: "tcp",
        port: 8080,
        address: { type: "hostname", name: "web" },
      }));
      const [status] = await readN(conn, 1);
      assert.equal(status, 0, "agent status for web:8080");
      await conn.write(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: web\r\n\r\n"));
      const response = await readHttpResponse(conn);
      const names = (await pods(kc, NS, "app=web")).map((p) => p.name);
      const body = response.body.trim();
      assert.ok(names.includes(body), `body ${body}, pods ${names}`);
    } finally {
      conn.close();
    }
  } finally {
    await pf.stop();
  }

  await kubectl(
    kc,
    "-n",
    NS,
    "delete",
    "job",
    "agent",
    "--cascade=foreground",
    "--wait=true",
    "--timeout=60s",
  );
  await poll("agent process gone", 15000, async () => {
    const st = await Deno.readTextFile(`/proc/${pid}/stat`).catch(() => null);
    return st === null || st.split(") ")[1]?.startsWith("Z") ? true : null;
  });
  await assert.rejects(Deno.stat(pidFile));
});

Deno.test({ name: "runtime: cleanup namespace", ...opts }, async () => {
  if (!setupDone) return;
  const kc = await setupDone;
  await kubectl(kc, "delete", "namespace", NS, "--wait=false");
});
