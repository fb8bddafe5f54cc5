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

async function poll<T>(what: string, timeoutMs: number, f: () => Promise<T | null>): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < end) {
    try {
      const v = await f();
      if (v !== null) return v;
    } catch (e) {
      last = String(e);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what} ${last}`);
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

async function runtimeDns(dir: string): Promise<[string, number]> {
  const info = JSON.parse(await Deno.readTextFile(`${dir}/runtime.json`)) as { dns: string };
  const [ip, port] = info.dns.split(":");
  return [ip, Number(port)];
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
    const seen = new Set<string>();
    for (let i = 0; i < 4; i++) seen.add((await curl(`http://${ip}:8080/`)).trim());
    assert.deepEqual([...seen].sort(), ps.map((p) => p.name).sort(), "round-robin over both pods");
    const dnsIP =
      (await kubectl(kc, "-n", NS, "get", "svc", "dns", "-o", "jsonpath={.spec.clusterIP}")).trim();
    const [dnsPod] = await pods(kc, NS, "app=dns");
    assert.deepEqual(await dig(dnsIP, 53, "whoami.test.relay", "TXT"), [`"${dnsPod.name}"`]);
  },
);

Deno.test({
  name: "runtime: cluster DNS answers services, headless, ExternalName; NXDOMAIN else",
  ...opts,
}, async () => {
  const kc = await setup();
  const c = await sharedCluster();
  const [dnsIP, dnsPort] = await runtimeDns(c.dir);
  const svcIP =
    (await kubectl(kc, "-n", NS, "get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}")).trim();
  assert.deepEqual(await dig(dnsIP, dnsPort, `web.${NS}.svc.cluster.local`, "A"), [svcIP]);
  assert.deepEqual(await dig(dnsIP, dnsPort, `web.${NS}.svc.cluster.local`, "A", ["+tcp"]), [
    svcIP,
  ]);
  const podIPs = (await pods(kc, NS, "app=web")).map((p) => p.ip).sort();
  assert.deepEqual(
    (await dig(dnsIP, dnsPort, `web-hl.${NS}.svc.cluster.local`, "A")).sort(),
    podIPs,
  );
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
  // The old pods' servers are gone with them; the Service reaches only new pods.
  const ip = (await kubectl(kc, "-n", NS, "get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"))
    .trim();
  for (let i = 0; i < 3; i++) {
    const name = (await curl(`http://${ip}:8080/`)).trim();
    assert.ok(after.some((p) => p.name === name), `service answered by ${name}`);
  }
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
