/**
 * A UDP client that keeps its socket across a rolling update (`kubectl rollout restart`): its
 * flow was opened to a pod that goes away, and it keeps sending from the same local port. As
 * kube-proxy drops the conntrack entries of a removed endpoint, the relay ends a flow once its pod
 * stops serving (deleted, not Ready), so the client's next datagram opens a new flow to a current pod.
 * Checked for `deploy/` and a headless `svc/`: after the old pod is gone, the same socket gets
 * answers from a new pod (bounded waits), and the relay printed a new `Handling connection` line.
 */
import assert from "node:assert/strict";
import { sharedCluster } from "../cluster/cluster.ts";
import {
  decodeMessage,
  encodeMessage,
  queryMessage,
  RecordType,
} from "../cluster/runtime/dns_wire.ts";
import { kubectl, podNames, startRelay } from "../_lib/relay.ts";
import { applyRolledOut } from "../_lib/workloads.ts";

const NS = "relay-udp-kept";
const opts = { sanitizeOps: false, sanitizeResources: false };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const MANIFEST = `apiVersion: v1
kind: Namespace
metadata: { name: ${NS} }
---
apiVersion: apps/v1
kind: Deployment
metadata: { name: kept, namespace: ${NS} }
spec:
  replicas: 1
  strategy: { type: RollingUpdate, rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } }
  selector: { matchLabels: { app: kept } }
  template:
    metadata: { labels: { app: kept } }
    spec:
      containers:
        - name: app
          image: relay-test/http
          ports: [{ name: dns, containerPort: 53, protocol: UDP }]
---
apiVersion: v1
kind: Service
metadata: { name: kept-headless, namespace: ${NS} }
spec:
  clusterIP: None
  selector: { app: kept }
  ports: [{ name: dns, port: 53, targetPort: dns, protocol: UDP }]
`;

/** One answer of a kept socket: the pod's name, or "timeout". */
interface Answer {
  at: number;
  pod: string;
}

/**
 * A UDP socket kept for the whole test (one local port, so one flow for the relay): `ask()` sends
 * a `whoami.test.relay TXT` query and waits up to 1 s for its answer (answers to earlier queries
 * are skipped).
 */
function keptSocket(port: number) {
  const sock = Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
  const waiting = new Map<number, (pod: string) => void>();
  const reader = (async () => {
    try {
      for (;;) {
        const [data] = await sock.receive();
        const m = decodeMessage(data);
        const txt = m.answers.find((a) => a.data.kind === "txt")?.data;
        waiting.get(m.id)?.(txt?.kind === "txt" ? txt.strings[0] : `rcode ${m.rcode}`);
      }
    } catch {
      // closed
    }
  })();
  let id = 0;
  return {
    localPort: (sock.addr as Deno.NetAddr).port,
    async ask(): Promise<Answer> {
      id = (id + 1) % 65536;
      const q = id;
      const at = Date.now();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const answer = new Promise<string>((r) => {
        waiting.set(q, r);
        timer = setTimeout(() => r("timeout"), 1000);
      });
      await sock.send(
        encodeMessage(queryMessage(q, "whoami.test.relay", RecordType.TXT)),
        { transport: "udp", hostname: "127.0.0.1", port },
      );
      const pod = await answer;
      clearTimeout(timer);
      waiting.delete(q);
      return { at, pod };
    },
    async close() {
      sock.close();
      await reader;
    },
  };
}

/** The last 3 answers were asked after `since` and came from pods not in `old`. */
function newAfter(got: Answer[], old: Set<string>, since: number): boolean {
  const last = got.slice(-3);
  return last.length === 3 &&
    last.every((a) => a.at > since && a.pod !== "timeout" && !old.has(a.pod));
}

Deno.test({
  name:
    "udp: a socket kept across a rollout of deploy/ and of a headless svc/ gets answers from a new pod",
  ...opts,
}, async () => {
  const cluster = await sharedCluster();
  const kc = cluster.kubeconfig;
  await applyRolledOut(kc, NS, MANIFEST, ["deploy/kept"]);
  const before = new Set(await podNames(kc, NS, "app=kept"));
  assert.equal(before.size, 1, `one pod before the rollout: ${[...before]}`);

  const targets = await Deno.makeTempFile({ suffix: ".txt" });
  await Deno.writeTextFile(
    targets,
    `-n ${NS} deploy/kept :53@udp\n-n ${NS} svc/kept-headless :53@udp\n`,
  );
  const relay = await startRelay(kc, ["-f", targets], { forwardLines: 2 });
  await Deno.remove(targets);
  const names = ["deploy/kept", "svc/kept-headless"];
  const sockets = relay.ports.map(keptSocket);
  try {
    for (const [i, s] of sockets.entries()) {
      const a = await s.ask();
      assert.ok(before.has(a.pod), `${names[i]} before the rollout: ${a.pod}`);
    }
    const restartAt = Date.now();
    await kubectl(kc, "-n", NS, "rollout", "restart", "deploy/kept");
    // Every socket keeps asking (every 250 ms) through the rollout, until the old pod is gone
    // and it got 3 answers in a row from new pods; bounded by count and time.
    let oldGoneAt: number | undefined;
    const watchOld = (async () => {
      for (let i = 0; i < 400 && oldGoneAt === undefined; i++) {
        const now = await podNames(kc, NS, "app=kept");
        if (![...before].some((p) => now.includes(p))) oldGoneAt = Date.now();
        else await sleep(250);
      }
    })();
    const answers = await Promise.all(sockets.map(async (s) => {
      const got: Answer[] = [];
      for (let i = 0; i < 300; i++) {
        got.push(await s.ask());
        if (oldGoneAt !== undefined && newAfter(got, before, oldGoneAt)) break;
        if (oldGoneAt !== undefined && Date.now() - oldGoneAt > 30_000) break;
        if (Date.now() - restartAt > 120_000) break;
        await sleep(250);
      }
      return got;
    }));
    await watchOld;
    const rel = (t: number) => ((t - restartAt) / 1000).toFixed(1);
    for (const [i, got] of answers.entries()) {
      console.log(
        `${names[i]} (local port ${sockets[i].localPort}): ${
          got.map((a) => `${rel(a.at)}s ${a.pod}`).join(", ")
        }`,
      );
    }
    assert.ok(oldGoneAt !== undefined, "the old pod was removed by the rollout");
    console.log(`old pod removed at ${rel(oldGoneAt)}s`);
    for (const [i, got] of answers.entries()) {
      assert.ok(
        newAfter(got, before, oldGoneAt),
        `${names[i]}: the kept socket gets answers from a new pod once the old one is gone (last: ${
          JSON.stringify(got.slice(-3))
        })`,
      );
    }
    // The relay moved each kept socket to a new flow: a second "Handling connection" per port.
    for (const [i, port] of relay.ports.entries()) {
      const handled = relay.out.filter((l) => l === `Handling connection for ${port}`).length;
      assert.ok(handled >= 2, `${names[i]}: ${handled} flow(s) for the kept socket`);
    }
  } finally {
    await Promise.all(sockets.map((s) => s.close()));
    assert.equal(await relay.stop(), 0, relay.err.join("\n"));
    await kubectl(kc, "delete", "ns", NS, "--wait=false");
  }
});
