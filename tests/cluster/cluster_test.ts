/**
 * Tests of the loopback control plane itself, with the real `kubectl`.
 * The pod runtime's behaviour (HTTP/DNS servers, Services, rollouts) is tested in runtime/.
 */

import assert from "node:assert/strict";
import { type ClusterState, parseJsonStream, sharedCluster, startCluster } from "./cluster.ts";
import { isAlive, listeningTcpPorts } from "./proc.ts";
import { startTcpEcho } from "../_lib/echo.ts";

interface Out {
  code: number;
  stdout: string;
  stderr: string;
}

async function kubectl(kubeconfig: string, ...args: string[]): Promise<Out> {
  const out = await new Deno.Command("kubectl", {
    args: ["--kubeconfig", kubeconfig, "--request-timeout=10s", ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const d = new TextDecoder();
  return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
}

async function ok(kubeconfig: string, ...args: string[]): Promise<string> {
  const r = await kubectl(kubeconfig, ...args);
  assert.equal(r.code, 0, `kubectl ${args.join(" ")} failed: ${r.stderr}`);
  return r.stdout;
}

/** True if dotted-quad `ip` is inside IPv4 `cidr`. */
function inCidr(ip: string, cidr: string): boolean {
  const toNum = (s: string) => s.split(".").reduce((n, o) => n * 256 + Number(o), 0);
  const [base, bits] = cidr.split("/");
  const size = 2 ** (32 - Number(bits));
  return Math.floor(toNum(ip) / size) === Math.floor(toNum(base) / size) &&
    /^\d+\.\d+\.\d+\.\d+$/.test(ip);
}

async function poll<T>(what: string, timeoutMs: number, f: () => Promise<T | null>): Promise<T> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    const v = await f();
    if (v !== null) return v;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what}`);
}

const suffix = () => crypto.randomUUID().slice(0, 8);

Deno.test("inCidr helper", () => {
  assert.ok(inCidr("127.1.3.4", "127.1.0.0/16"));
  assert.ok(!inCidr("127.2.0.1", "127.1.0.0/16"));
  assert.ok(!inCidr("10.1.0.1", "127.1.0.0/16"));
});

Deno.test("parseJsonStream splits concatenated objects, braces in strings included", () => {
  const text = '{"a":"}{\\"x"}\n{"kind":"List","items":[{"b":2}]}\n';
  assert.deepEqual(parseJsonStream(text), [{ a: '}{"x' }, { kind: "List", items: [{ b: 2 }] }]);
});

Deno.test("kubectl get nodes: every node Ready, with InternalIP 127.0.0.1", async () => {
  const c = await sharedCluster();
  const nodes = JSON.parse(await ok(c.kubeconfig, "get", "nodes", "-o", "json")) as {
    items: {
      metadata: { name: string };
      status: {
        conditions: { type: string; status: string }[];
        addresses: { type: string; address: string }[];
      };
    }[];
  };
  assert.ok(nodes.items.length >= 1, "no nodes");
  for (const n of nodes.items) {
    const ready = n.status.conditions.find((x) => x.type === "Ready");
    assert.equal(ready?.status, "True", `${n.metadata.name} not Ready`);
    const ip = n.status.addresses.find((a) => a.type === "InternalIP");
    assert.equal(ip?.address, "127.0.0.1");
  }
  const table = await ok(c.kubeconfig, "get", "nodes");
  assert.match(table, /\sReady\s/);
  assert.doesNotMatch(table, /NotReady/);
});

Deno.test("create deployment: pods Running with pod IPs in the loopback pod CIDR", async () => {
  const c = await sharedCluster();
  const ns = `cluster-test-${suffix()}`;
  await ok(c.kubeconfig, "create", "namespace", ns);
  try {
    await ok(
      c.kubeconfig,
      "-n",
      ns,
      "create",
      "deployment",
      "web",
      "--image=any",
      "--port=80",
      "--replicas=2",
    );
    const pods = await poll("2 Running pods", 60000, async () => {
      const list = JSON.parse(
        await ok(c.kubeconfig, "-n", ns, "get", "pods", "-l", "app=web", "-o", "json"),
      ) as { items: { metadata: { name: string }; status: { phase: string; podIP?: string } }[] };
      const running = list.items.filter((p) => p.status.phase === "Running" && p.status.podIP);
      return running.length === 2 ? running : null;
    });
    const ips = pods.map((p) => p.status.podIP as string);
    for (const ip of ips) assert.ok(inCidr(ip, c.podCIDR), `${ip} not in ${c.podCIDR}`);
    assert.ok(inCidr(ips[0], "127.0.0.0/8"));
    assert.notEqual(ips[0], ips[1], "two pods share an IP");
    await ok(c.kubeconfig, "-n", ns, "rollout", "status", "deploy/web", "--timeout=60s");
  } finally {
    await kubectl(c.kubeconfig, "delete", "namespace", ns, "--wait=false");
  }
});

Deno.test("services get a cluster IP in the loopback service CIDR", async () => {
  const c = await sharedCluster();
  const ns = `cluster-test-${suffix()}`;
  await ok(c.kubeconfig, "create", "namespace", ns);
  try {
    await ok(c.kubeconfig, "-n", ns, "create", "service", "clusterip", "svc", "--tcp=80:8080");
    const ip =
      (await ok(c.kubeconfig, "-n", ns, "get", "svc", "svc", "-o", "jsonpath={.spec.clusterIP}"))
        .trim();
    assert.ok(inCidr(ip, c.serviceCIDR), `${ip} not in ${c.serviceCIDR}`);
    assert.ok(inCidr(ip, "127.0.0.0/8"));
  } finally {
    await kubectl(c.kubeconfig, "delete", "namespace", ns, "--wait=false");
  }
});

Deno.test("client-cert, token and exec-plugin kubeconfigs authenticate; a bad token does not", async () => {
  const c = await sharedCluster();
  const cases: [string, string][] = [
    [c.kubeconfig, "kubernetes-admin"],
    [c.tokenKubeconfig, "token-admin"],
    [c.execKubeconfig, "exec-admin"],
  ];
  for (const [kc, user] of cases) {
    const api = JSON.parse(await ok(kc, "get", "--raw", "/api")) as { kind: string };
    assert.equal(api.kind, "APIVersions");
    const who = JSON.parse(await ok(kc, "auth", "whoami", "-o", "json")) as {
      status: { userInfo: { username: string; groups: string[] } };
    };
    assert.equal(who.status.userInfo.username, user);
    assert.ok(who.status.userInfo.groups.includes("system:masters"));
  }
  const text = await Deno.readTextFile(c.tokenKubeconfig);
  const bad = await Deno.makeTempFile({ suffix: ".kubeconfig" });
  try {
    await Deno.writeTextFile(bad, text.replace(/token: \S+/, "token: not-a-valid-token"));
    const r = await kubectl(bad, "get", "--raw", "/api");
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /Unauthorized/i);
  } finally {
    await Deno.remove(bad);
  }
});

Deno.test("createUser: no rights → Forbidden; a Role grants exactly its rules", async () => {
  const c = await sharedCluster();
  const none = await c.createUser(`nobody-${suffix()}`, null);
  const r = await kubectl(none, "get", "pods", "-n", "default");
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /forbidden/i);
  // Authenticated, though: discovery works.
  await ok(none, "get", "--raw", "/api");

  const manifest = await Deno.makeTempFile({ suffix: ".yaml" });
  const role = `pod-reader-${suffix()}`;
  try {
    await Deno.writeTextFile(
      manifest,
      `# two documents: a ClusterRole and a Role (and a ConfigMap, which is ignored)
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: ${role}-nodes
rules:
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["get", "list"]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: ${role}-ignored
  namespace: default
data: {a: "1"}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: ${role}
  namespace: default
rules:
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list"]
`,
    );
    const reader = await c.createUser(`reader-${suffix()}`, manifest);
    await ok(reader, "get", "pods", "-n", "default");
    await ok(reader, "get", "nodes");
    const cm = await kubectl(c.kubeconfig, "get", "configmap", `${role}-ignored`, "-n", "default");
    assert.notEqual(cm.code, 0, "createUser must not create non-RBAC objects");
    const secrets = await kubectl(reader, "get", "secrets", "-n", "default");
    assert.notEqual(secrets.code, 0);
    assert.match(secrets.stderr, /forbidden/i);
    const other = await kubectl(reader, "get", "pods", "-n", "kube-system");
    assert.notEqual(other.code, 0);
    assert.match(other.stderr, /forbidden/i);
  } finally {
    await Deno.remove(manifest);
  }
});

async function sha256(data: Uint8Array<ArrayBuffer>): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Port-forward to pod/echo port 7 over a raw WebSocket (`v4.channel.k8s.io`: every message is
 * a channel byte + payload; channel 0 data, 1 errors; each starts with the 2-byte port).
 * Sends `data`, returns the SHA-256 of the bytes echoed back.
 */
async function wsEcho(
  server: string,
  caFile: string,
  tokenKubeconfig: string,
  data: Uint8Array,
): Promise<string> {
  const token = (await Deno.readTextFile(tokenKubeconfig)).match(/token: (\S+)/)?.[1];
  assert.ok(token);
  const client = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(caFile)] });
  const url = `${
    server.replace("https:", "wss:")
  }/api/v1/namespaces/default/pods/echo/portforward?ports=7`;
  const init = {
    protocols: ["v4.channel.k8s.io"],
    headers: { Authorization: `Bearer ${token}` },
    client,
  };
  const ws = new WebSocket(url, init as unknown as string[]);
  ws.binaryType = "arraybuffer";
  const got = new Uint8Array(data.length);
  let n = 0;
  const headers = [0, 0];
  const errors: string[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      ws.onopen = () => {
        assert.equal(ws.protocol, "v4.channel.k8s.io");
        for (let off = 0; off < data.length; off += 32768) {
          const chunk = data.subarray(off, Math.min(off + 32768, data.length));
          const msg = new Uint8Array(chunk.length + 1);
          msg.set(chunk, 1);
          ws.send(msg);
        }
      };
      ws.onmessage = (e: MessageEvent<ArrayBuffer>) => {
        const d = new Uint8Array(e.data);
        const ch = d[0];
        let body = d.subarray(1);
        if (ch > 1) return reject(new Error(`unexpected channel ${ch}`));
        if (headers[ch] < 2) {
          const take = Math.min(2 - headers[ch], body.length);
          headers[ch] += take;
          body = body.subarray(take);
        }
        if (ch === 1) {
          if (body.length) errors.push(new TextDecoder().decode(body));
          return;
        }
        got.set(body.subarray(0, data.length - n), n);
        n += body.length;
        if (n >= data.length) resolve();
      };
      ws.onerror = (e) => reject(new Error(`websocket error: ${(e as ErrorEvent).message}`));
      ws.onclose = () => reject(new Error(`closed early after ${n} bytes: ${errors.join()}`));
    });
  } finally {
    const closed = new Promise((r) => ws.onclose = r);
    ws.close();
    await closed;
    client.close();
  }
  assert.equal(n, data.length, errors.join());
  return await sha256(got);
}

Deno.test({
  name:
    "own cluster: kwok port-forward reaches a PortForward target; apiserver restarts; stop leaves nothing",
  async fn() {
    const c = await startCluster({ runtime: false, log: () => {} });
    const state = JSON.parse(await Deno.readTextFile(`${c.dir}/state.json`)) as ClusterState;
    const echo = startTcpEcho();
    let pf: Deno.ChildProcess | undefined;
    try {
      await ok(
        c.kubeconfig,
        "run",
        "echo",
        "--image=any",
        "--restart=Never",
        "--port=7",
      );
      await poll("pod echo Running", 60000, async () => {
        const phase = await ok(
          c.kubeconfig,
          "get",
          "pod",
          "echo",
          "-o",
          "jsonpath={.status.phase}",
        );
        return phase === "Running" ? true : null;
      });
      const obj = {
        apiVersion: "kwok.x-k8s.io/v1alpha1",
        kind: "PortForward",
        metadata: { name: "echo", namespace: "default" },
        spec: { forwards: [{ ports: [7], target: { address: "127.0.0.1", port: echo.port } }] },
      };
      const file = `${c.dir}/pf-echo.json`;
      await Deno.writeTextFile(file, JSON.stringify(obj));
      await ok(c.kubeconfig, "apply", "-f", file);

      pf = new Deno.Command("kubectl", {
        args: ["--kubeconfig", c.kubeconfig, "port-forward", "pod/echo", ":7"],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const reader = pf.stdout.getReader();
      let seen = "";
      let localPort = 0;
      while (!localPort) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`kubectl port-forward exited: ${seen}`);
        seen += new TextDecoder().decode(value);
        const m = seen.match(/Forwarding from 127\.0\.0\.1:(\d+) -> 7/);
        if (m) localPort = Number(m[1]);
      }
      reader.releaseLock();
      // Drain the rest of kubectl's output in the background.
      const drainOut = pf.stdout.pipeTo(new WritableStream());
      const drainErr = pf.stderr.pipeTo(new WritableStream());

      const payload = crypto.getRandomValues(new Uint8Array(65536));
      const big = new Uint8Array(1024 * 1024);
      for (let i = 0; i < big.length; i += payload.length) big.set(payload, i);
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: localPort });
      const writer = (async () => {
        let off = 0;
        while (off < big.length) off += await conn.write(big.subarray(off));
        await conn.closeWrite();
      })();
      const got = new Uint8Array(big.length);
      let n = 0;
      const buf = new Uint8Array(65536);
      while (n < big.length) {
        const r = await conn.read(buf);
        if (r === null) break;
        got.set(buf.subarray(0, r), n);
        n += r;
      }
      await writer;
      conn.close();
      assert.equal(n, big.length, "short echo through kubectl port-forward");
      assert.equal(await sha256(got), await sha256(big));

      pf.kill("SIGTERM");
      await pf.status;
      await Promise.all([drainOut, drainErr]);
      pf = undefined;

      // The same through the apiserver's WebSocket port-forward (v4.channel.k8s.io), bearer token.
      assert.equal(await wsEcho(c.server, state.caCert, c.tokenKubeconfig, big), await sha256(big));

      await c.stopApiserver();
      const down = await kubectl(c.kubeconfig, "get", "--raw", "/readyz");
      assert.notEqual(down.code, 0);
      await c.startApiserver();
      assert.equal((await ok(c.kubeconfig, "get", "--raw", "/readyz")).trim(), "ok");
    } finally {
      if (pf) {
        pf.kill("SIGKILL");
        await pf.status;
        await pf.stdout.cancel().catch(() => {});
        await pf.stderr.cancel().catch(() => {});
      }
      await echo.close();
      await c.stop();
    }
    const after = JSON.parse(await Deno.readTextFile(`${c.dir}/state.json`)) as ClusterState;
    for (const p of [...state.procs, ...after.procs]) {
      assert.ok(!isAlive(p.pid), `${p.spec.name} (pid ${p.pid}) still alive`);
    }
    const listening = listeningTcpPorts();
    for (const [name, port] of Object.entries(state.ports)) {
      assert.ok(!listening.has(port), `${name} port ${port} still listening`);
    }
    const r = await kubectl(c.kubeconfig, "get", "--raw", "/readyz");
    assert.notEqual(r.code, 0);
    await Deno.remove(c.dir, { recursive: true });
  },
});

Deno.test("sharedCluster without RELAY_TEST_CLUSTER starts one and stops it when the process exits", async () => {
  const dir = await Deno.makeTempDir({ prefix: "relay-shared-test-" });
  const file = `${dir}/inner_test.ts`;
  const cluster = new URL("./cluster.ts", import.meta.url).href;
  await Deno.writeTextFile(
    file,
    `import { sharedCluster } from ${JSON.stringify(cluster)};
Deno.test("inner", async () => {
  const c = await sharedCluster();
  const again = await sharedCluster();
  if (again.dir !== c.dir) throw new Error("sharedCluster started twice");
  const out = await new Deno.Command("kubectl", {
    args: ["--kubeconfig", c.kubeconfig, "get", "--raw", "/readyz"],
  }).output();
  if (new TextDecoder().decode(out.stdout) !== "ok") throw new Error("not ready");
  console.log("STATE " + await Deno.readTextFile(c.dir + "/state.json").then((t) => JSON.stringify(JSON.parse(t))));
});
`,
  );
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["test", "-A", file],
      env: { RELAY_TEST_CLUSTER: "" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, text + new TextDecoder().decode(out.stderr));
    const line = text.split("\n").find((l) => l.startsWith("STATE "));
    assert.ok(line, text);
    const st = JSON.parse(line.slice(6)) as ClusterState;
    const pids = [st.ownerPid, ...st.procs.map((p) => p.pid)];
    await poll("the shared cluster to go away", 30000, () => {
      return Promise.resolve(pids.every((p) => !isAlive(p)) ? true : null);
    });
    const listening = listeningTcpPorts();
    for (const [name, port] of Object.entries(st.ports)) {
      assert.ok(!listening.has(port), `${name} port ${port} still listening`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
