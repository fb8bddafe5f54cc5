import assert from "node:assert/strict";
import { type PlayerEnv, PodPlayer } from "./pod_player.ts";
import { startDnsServer } from "./dns_server.ts";
import { clusterAnswerer } from "./zones.ts";
import { agentArgs, portPlan, type V1Pod, type V1Service } from "./kube.ts";
import { dig, requireTools, runCmd } from "./_testlib.ts";

Deno.test("agentArgs: --listen and --health are replaced by the pod IP, other args kept", () => {
  assert.deepEqual(agentArgs(["--listen", "0.0.0.0:9600", "--idle-exit", "5m"], "127.1.0.7"), {
    args: ["--listen", "127.1.0.7:9600", "--idle-exit", "5m"],
    port: 9600,
    healthPort: undefined,
    loopbackPorts: [],
  });
  assert.deepEqual(agentArgs(["--listen=0.0.0.0:1234", "-v", "2"], "127.1.0.7"), {
    args: ["--listen", "127.1.0.7:1234", "-v", "2"],
    port: 1234,
    healthPort: undefined,
    loopbackPorts: [],
  });
  assert.deepEqual(agentArgs(undefined, "127.1.0.7"), {
    args: ["--listen", "127.1.0.7:9527"],
    port: 9527,
    healthPort: undefined,
    loopbackPorts: [],
  });
  // The manifest's: tunnel on the pod's loopback, health port on every address.
  assert.deepEqual(
    agentArgs(
      ["--listen", "127.0.0.1:9527", "--health", "0.0.0.0:9528", "--idle-exit", "5m"],
      "127.1.0.7",
    ),
    {
      args: ["--listen", "127.1.0.7:9527", "--health", "127.1.0.7:9528", "--idle-exit", "5m"],
      port: 9527,
      healthPort: 9528,
      loopbackPorts: [9527],
    },
  );
  assert.deepEqual(agentArgs(["--health=[::1]:9000", "--listen=[::]:9001"], "127.1.0.7"), {
    args: ["--listen", "127.1.0.7:9001", "--health", "127.1.0.7:9000"],
    port: 9001,
    healthPort: 9000,
    loopbackPorts: [9000],
  });
});

Deno.test("portPlan: HTTP, DNS (UDP + TCP), redis, named dns TCP port", () => {
  const pod: V1Pod = {
    spec: {
      containers: [
        {
          name: "a",
          image: "relay-test/multi",
          ports: [
            { containerPort: 5000 },
            { containerPort: 6000, protocol: "UDP" },
            { name: "dns-tcp", containerPort: 7000 },
            { containerPort: 53, protocol: "UDP" },
            { containerPort: 53, protocol: "TCP" },
          ],
        },
        { name: "r", image: "docker.io/library/redis:7", ports: [{ containerPort: 6379 }] },
      ],
    },
  };
  const key = (s: { port: number; protocol: string; role: string }) =>
    `${s.port}/${s.protocol}=${s.role}`;
  assert.deepEqual(portPlan(pod).map(key).sort(), [
    "5000/TCP=http",
    "53/TCP=http",
    "53/UDP=dns",
    "6000/TCP=dns",
    "6000/UDP=dns",
    "6379/TCP=redis",
    "7000/TCP=dns",
  ]);
  const echo: V1Pod = {
    spec: {
      containers: [{
        name: "e",
        image: "relay-test/echo",
        ports: [
          { name: "echo", containerPort: 7000 },
          { name: "dns", containerPort: 5353, protocol: "UDP" },
          { name: "echo-udp", containerPort: 7001, protocol: "UDP" },
          { name: "http", containerPort: 80 },
        ],
      }],
    },
  };
  assert.deepEqual(portPlan(echo).map(key).sort(), [
    "5353/TCP=dns",
    "5353/UDP=dns",
    "7000/TCP=echo",
    "7001/TCP=echo",
    "7001/UDP=echo",
    "80/TCP=http",
  ]);
});

const DNS_IP = "127.0.77.53";
const POD_IP = "127.0.77.9";

// A stand-in for agent.ts: resolves the short name "web" with both resolvers the real agent may
// use (getaddrinfo via Deno.connect, and Deno.resolveDns) and reports what it got per connection.
const FAKE_AGENT = `
const i = Deno.args.indexOf("--listen");
const [host, port] = Deno.args[i + 1].split(":");
const l = Deno.listen({ hostname: host, port: Number(port) });
console.log("listening on " + host + ":" + port);
for await (const c of l) {
  let a = "", b = "";
  try { a = (await Deno.resolveDns("web", "A")).join(","); } catch (e) { a = "ERR " + e; }
  try {
    const up = await Deno.connect({ hostname: "web", port: 1 }).catch((e) => String(e));
    b = typeof up === "string" ? up : "connected";
  } catch (e) { b = "ERR " + e; }
  await c.write(new TextEncoder().encode(a + "\\n" + b + "\\n" + Deno.readTextFileSync("/etc/resolv.conf")));
  c.close();
}
`;

Deno.test({
  name: "agent pod: runs in a private mount namespace whose resolv.conf uses the cluster DNS",
  ignore: Deno.uid() !== 0,
}, async () => {
  await requireTools("dig");
  const dir = await Deno.makeTempDir({ prefix: "rt-player-" });
  const agentPath = `${dir}/fake_agent.ts`;
  await Deno.writeTextFile(agentPath, FAKE_AGENT);
  const svc: V1Service = {
    metadata: { name: "web", namespace: "team" },
    spec: { clusterIP: "127.0.77.80", ports: [{ port: 80 }] },
  };
  const dns = await startDnsServer({
    hostname: DNS_IP,
    port: 53,
    answer: clusterAnswerer({
      service: (ns, name) => (ns === "team" && name === "web" ? svc : undefined),
      pods: () => [],
      readyEndpoints: () => [],
    }),
  });
  const calls: string[] = [];
  let finished: (code: number) => void;
  const finishedP = new Promise<number>((r) => finished = r);
  const env: PlayerEnv = {
    agentPath,
    stateDir: dir,
    dnsServer: DNS_IP,
    log: () => {},
    publishPorts: (_pod, ports) => {
      calls.push(`publish ${ports}`);
      return Promise.resolve();
    },
    unpublish: (ns, name) => {
      calls.push(`unpublish ${ns}/${name}`);
      return Promise.resolve();
    },
    markReady: () => {
      calls.push("ready");
      return Promise.resolve();
    },
    markFinished: (_pod, code) => {
      finished(code);
      return Promise.resolve();
    },
  };
  const pod: V1Pod = {
    metadata: {
      name: "agent-x",
      namespace: "team",
      uid: "u1",
      labels: { "app.kubernetes.io/name": "kubectl-relay-agent" },
    },
    spec: {
      nodeName: "n",
      containers: [{ name: "agent", args: ["--listen", "0.0.0.0:9527", "--idle-exit", "5m"] }],
    },
    status: { phase: "Running", podIP: POD_IP },
  };
  const player = new PodPlayer(pod, env);
  try {
    assert.deepEqual(await dig(DNS_IP, 53, "web.team.svc.cluster.local", "A"), ["127.0.77.80"]);
    await player.start();
    assert.deepEqual(calls, ["publish 9527", "ready"]);
    const pid = Number((await Deno.readTextFile(`${dir}/agents/team_agent-x.pid`)).trim());
    assert.equal(pid, player.agentPid);
    const conn = await Deno.connect({ hostname: POD_IP, port: 9527 });
    const buf = new Uint8Array(4096);
    let text = "";
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
    conn.close();
    const [viaResolveDns, viaConnect, ...resolv] = text.split("\n");
    assert.equal(viaResolveDns, "127.0.77.80", text);
    // getaddrinfo found the name (the connection itself is refused: nothing on port 1).
    assert.match(viaConnect, /refused/i, text);
    assert.ok(resolv.includes(`nameserver ${DNS_IP}`), text);
    assert.ok(resolv.includes("search team.svc.cluster.local svc.cluster.local cluster.local"));
    // Our own mount namespace is untouched.
    assert.ok(!(await Deno.readTextFile("/etc/resolv.conf")).includes(DNS_IP));

    await player.stop();
    assert.deepEqual(calls, ["publish 9527", "ready", "unpublish team/agent-x"]);
    const st = await runCmd("sh", ["-c", `kill -0 ${pid} 2>/dev/null && echo alive || echo gone`]);
    assert.equal(st.stdout.trim(), "gone");
    await assert.rejects(Deno.stat(`${dir}/agents/team_agent-x.pid`));
  } finally {
    await player.stop();
    await dns.close();
    await Deno.remove(dir, { recursive: true });
  }

  // An agent that exits by itself marks the pod finished with its exit code.
  const dir2 = await Deno.makeTempDir({ prefix: "rt-player-" });
  await Deno.writeTextFile(
    `${dir2}/a.ts`,
    `console.log("listening on x"); setTimeout(() => Deno.exit(3), 100);`,
  );
  const p2 = new PodPlayer(pod, {
    ...env,
    agentPath: `${dir2}/a.ts`,
    stateDir: dir2,
    privateResolv: false,
  });
  try {
    await p2.start();
    assert.equal(await finishedP, 3);
  } finally {
    await p2.stop();
    await Deno.remove(dir2, { recursive: true });
  }
});
