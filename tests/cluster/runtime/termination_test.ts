/**
 * A deleted pod ends as a kubelet ends it (PodPlayer.terminate, real sockets on loopback): the
 * preStop sleep serves as before; at SIGTERM the servers stop accepting (new connections refused,
 * UDP silent) and open connections go on; SIGKILL at the end of the grace period; a pod with
 * nothing open exits at once with 0.
 */
import assert from "node:assert/strict";
import { MIN_GRACE_AFTER_PRESTOP_MS, type PlayerEnv, PodPlayer } from "./pod_player.ts";
import { terminationOf, type V1Pod } from "./kube.ts";
import { encodeMessage, queryMessage, RecordType } from "./dns_wire.ts";
import { keepAliveGet } from "../../_lib/traffic.ts";

const POD_IP = "127.0.80.7";

const env: PlayerEnv = {
  agentPath: "/nonexistent",
  stateDir: "/tmp",
  dnsServer: "127.0.0.1",
  log: () => {},
  publishPorts: () => Promise.resolve(),
  unpublish: () => Promise.resolve(),
  markReady: () => Promise.resolve(),
  markFinished: () => Promise.resolve(),
};

function webPod(extra: { udp?: boolean } = {}): V1Pod {
  return {
    metadata: { name: "web-1", namespace: "t", uid: crypto.randomUUID() },
    spec: {
      nodeName: "n",
      containers: [{
        name: "web",
        image: "relay-test/http",
        ports: [
          { name: "http", containerPort: 8080 },
          ...(extra.udp ? [{ name: "dns", containerPort: 5353, protocol: "UDP" }] : []),
        ],
      }],
    },
    status: { phase: "Running", podIP: POD_IP },
  };
}

async function connect(port = 8080): Promise<Deno.Conn | "refused" | "reset"> {
  try {
    return await Deno.connect({ hostname: POD_IP, port });
  } catch (e) {
    if (e instanceof Deno.errors.ConnectionRefused) return "refused";
    // A listener being released resets what reaches it meanwhile.
    if (e instanceof Deno.errors.ConnectionReset) return "reset";
    throw e;
  }
}

/** Poll (≤ 2 s) until a new connection is refused (the listener goes right after SIGTERM). */
async function refusedSoon(): Promise<boolean> {
  for (let i = 0; i < 200; i++) {
    const c = await connect();
    if (c === "refused") return true;
    if (c !== "reset") c.close();
    await new Promise((r) => setTimeout(r, 10));
  }
  return false;
}

async function udpAnswered(port: number): Promise<boolean> {
  const sock = Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
  try {
    const q = encodeMessage(queryMessage(1, "whoami.test.relay", RecordType.TXT));
    await sock.send(q, { transport: "udp", hostname: POD_IP, port });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const r = await Promise.race([
      sock.receive().then(() => true),
      new Promise<boolean>((res) => timer = setTimeout(() => res(false), 300)),
    ]);
    clearTimeout(timer);
    return r;
  } finally {
    sock.close();
  }
}

Deno.test("terminationOf: deletion grace, else the pod's, else 30 s; capped; preStop sleep", () => {
  const pod = (meta: number | undefined, spec: number | undefined, sleep?: number): V1Pod => ({
    metadata: { deletionGracePeriodSeconds: meta },
    spec: {
      terminationGracePeriodSeconds: spec,
      containers: [
        { name: "a" },
        { name: "b", lifecycle: sleep ? { preStop: { sleep: { seconds: sleep } } } : undefined },
      ],
    },
  });
  assert.deepEqual(terminationOf(pod(undefined, undefined), 2), { graceMs: 2000, preStopMs: 0 });
  assert.deepEqual(terminationOf(pod(undefined, 1), 2), { graceMs: 1000, preStopMs: 0 });
  assert.deepEqual(terminationOf(pod(0, 20), 2), { graceMs: 0, preStopMs: 0 });
  assert.deepEqual(terminationOf(pod(undefined, 30, 3), 5), { graceMs: 5000, preStopMs: 3000 });
});

Deno.test("terminate: new connections refused, open ones served until SIGKILL at the grace period's end", async () => {
  const player = new PodPlayer(webPod({ udp: true }), env);
  await player.start();
  const open = await connect();
  assert.ok(typeof open !== "string");
  const conn = open;
  try {
    assert.equal(await keepAliveGet(conn), "web-1");
    assert.equal(await udpAnswered(5353), true);
    const t0 = performance.now();
    const ended = player.terminate({ graceMs: 1000, preStopMs: 0 });
    assert.ok(await refusedSoon(), "new connections are refused after SIGTERM");
    assert.equal(await udpAnswered(5353), false, "the UDP server stopped with SIGTERM");
    // The established keep-alive connection is still served during the grace period.
    assert.equal(await keepAliveGet(conn), "web-1");
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(await keepAliveGet(conn), "web-1");
    // SIGKILL (at least kubelet's 2 s minimum after SIGTERM): the connection ends.
    assert.equal(await ended, 137, "killed");
    const took = performance.now() - t0;
    assert.ok(took >= MIN_GRACE_AFTER_PRESTOP_MS - 50, `killed after ${took} ms`);
    assert.equal(await keepAliveGet(conn), null, "the connection ended with the kill");
  } finally {
    conn.close();
    await player.stop();
  }
});

Deno.test("terminate: the preStop sleep serves as before; a drained pod exits by itself with 0", async () => {
  const player = new PodPlayer(webPod(), env);
  await player.start();
  const t0 = performance.now();
  const ended = player.terminate({ graceMs: 2000, preStopMs: 600 });
  try {
    // During preStop, new connections are accepted and served.
    const c = await connect();
    assert.ok(typeof c !== "string", "preStop: still accepting");
    const conn = c;
    assert.equal(await keepAliveGet(conn), "web-1");
    conn.close(); // nothing open any more: after SIGTERM the server drains at once
    assert.ok(await refusedSoon(), "refused after preStop (SIGTERM)");
    assert.ok(performance.now() - t0 >= 550, "not refused before the preStop sleep ended");
    assert.equal(await ended, 0, "exited by itself");
    assert.ok(performance.now() - t0 < 1800, "did not wait for the end of the grace period");
  } finally {
    await player.stop();
  }
});

Deno.test("stop: kills at once, even during a termination", async () => {
  const player = new PodPlayer(webPod(), env);
  await player.start();
  const conn = await connect() as Deno.Conn;
  try {
    assert.equal(await keepAliveGet(conn), "web-1");
    const t0 = performance.now();
    const ended = player.terminate({ graceMs: 2000, preStopMs: 2000 });
    await player.stop();
    assert.equal(await ended, 137);
    assert.ok(performance.now() - t0 < 1000, "stop() did not wait for preStop/grace");
    assert.equal(await keepAliveGet(conn), null);
    assert.equal(await connect(), "refused");
  } finally {
    conn.close();
  }
});
