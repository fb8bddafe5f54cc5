/**
 * Rolling updates under request-level load (`kubectl rollout restart`, maxUnavailable 0): every
 * HTTP request on a new TCP connection and every DNS query on a new UDP flow (a socket on a port
 * never used before), several at once, for the whole rollout and 3 s after it; requests before and
 * after are checked (answers from new pods after); connections opened before the rollout keep
 * working until their pod's grace period ends, then end (EOF or reset, once).
 *
 * The harness behaves like kube-proxy (one random endpoint per connection, no retry, endpoint
 * changes after 1 s) and a kubelet (a deleted pod stops accepting at SIGTERM, is killed after its
 * grace period). Two workloads:
 * - `plain` (no preStop hook): kube-proxy still sends new connections to a deleted pod during
 *   the propagation delay, and they fail — for anyone: direct connections to the cluster IP fail
 *   (checked: the harness is not kinder than a cluster), and `svc/` through the relay fails no
 *   more often (failure rates, compared within sampling noise: which endpoint a connection gets is
 *   random). `deploy/` follows ready pods and retries a pod that refuses; what remains is the
 *   race of a connection the kernel had queued when the pod closed its listener (reset after
 *   connect; the request may have reached the pod, so it is not retried): failures are allowed
 *   only at a pod's deletion instant, at most one per worker and deleted pod.
 * - `graceful` (`preStop: sleep 2 s`, longer than the propagation delay, as Kubernetes recommends
 *   for Services): direct connections do not fail, and the relay must not fail either: 0 for
 *   `deploy/` (TCP and UDP), relay ≤ direct for `svc/` TCP. For `svc/` UDP the agent opens a
 *   socket per flow on an ephemeral port; a port that repeats an earlier flow's is, for conntrack
 *   (and our forwarder), that earlier flow, to a pod that may have stopped answering: compared
 *   within sampling noise, like `plain`.
 */
import assert from "node:assert/strict";
import { sharedCluster } from "../cluster/cluster.ts";
import { KubeClient } from "../cluster/client.ts";
import type { ClusterState } from "../cluster/cluster.ts";
import { kubectl, type RelayProcess, startRelay } from "../_lib/relay.ts";
import { applyRolledOut } from "../_lib/workloads.ts";
import {
  formatTally,
  httpOnce,
  keepAliveGet,
  type LoadLoop,
  type Outcome,
  startLoad,
  type Tally,
  udpWhoami,
} from "../_lib/traffic.ts";

const NS = "relay-rollout";
const opts = { sanitizeOps: false, sanitizeResources: false };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function workload(name: string, preStopSeconds: number): string {
  const lifecycle = preStopSeconds
    ? `\n          lifecycle: { preStop: { sleep: { seconds: ${preStopSeconds} } } }`
    : "";
  return `---
apiVersion: apps/v1
kind: Deployment
metadata: { name: ${name}, namespace: ${NS} }
spec:
  replicas: 2
  strategy: { type: RollingUpdate, rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } }
  selector: { matchLabels: { app: ${name} } }
  template:
    metadata: { labels: { app: ${name} } }
    spec:
      containers:
        - name: app
          image: relay-test/http
          ports:
            - { name: http, containerPort: 80, protocol: TCP }
            - { name: dns, containerPort: 53, protocol: UDP }${lifecycle}
---
apiVersion: v1
kind: Service
metadata: { name: ${name}, namespace: ${NS} }
spec:
  selector: { app: ${name} }
  ports:
    - { name: http, port: 80, targetPort: http, protocol: TCP }
    - { name: dns, port: 53, targetPort: dns, protocol: UDP }
`;
}

let ready: Promise<string> | undefined;
function setup(): Promise<string> {
  ready ??= (async () => {
    const cluster = await sharedCluster();
    await applyRolledOut(
      cluster.kubeconfig,
      NS,
      `apiVersion: v1\nkind: Namespace\nmetadata: { name: ${NS} }\n` +
        workload("plain", 0) + workload("graceful", 2),
      ["deploy/plain", "deploy/graceful"],
    );
    return cluster.kubeconfig;
  })();
  return ready;
}

/** A pod's life as seen by polling the API (local times, ms). */
interface PodLife {
  terminatingAt?: number;
  goneAt?: number;
}

/** Polls (every 100 ms) the pods of `app`, noting when each became Terminating and went away. */
async function watchPods(app: string) {
  const cluster = await sharedCluster();
  const st = JSON.parse(await Deno.readTextFile(`${cluster.dir}/state.json`)) as ClusterState;
  const client = new KubeClient(
    st.server,
    await Deno.readTextFile(st.caCert),
    await Deno.readTextFile(st.adminCert),
    await Deno.readTextFile(st.adminKey),
  );
  const lives = new Map<string, PodLife>();
  let stopped = false;
  const path = `/api/v1/namespaces/${NS}/pods?labelSelector=app%3D${app}`;
  const loop = (async () => {
    for (let i = 0; i < 3000 && !stopped; i++) {
      try {
        const list = await client.request("GET", path, undefined, 3000);
        const now = Date.now();
        const items = list.items as { metadata: { name: string; deletionTimestamp?: string } }[];
        const seen = new Set<string>();
        for (const p of items) {
          seen.add(p.metadata.name);
          const life = lives.get(p.metadata.name) ?? {};
          if (p.metadata.deletionTimestamp && life.terminatingAt === undefined) {
            life.terminatingAt = now;
          }
          lives.set(p.metadata.name, life);
        }
        for (const [name, life] of lives) if (!seen.has(name)) life.goneAt ??= now;
      } catch {
        // a slow answer: try again
      }
      await sleep(100);
    }
  })();
  return {
    lives,
    async stop() {
      stopped = true;
      await loop;
      client.close();
    },
  };
}

/**
 * A keep-alive GET on an open connection: the pod's name, null once the connection ended, or
 * "hang" with no answer nor end within `timeoutMs`.
 */
async function keepAliveGetOrHang(
  conn: Deno.Conn,
  timeoutMs = 5000,
): Promise<string | null | "hang"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"hang">((r) => timer = setTimeout(() => r("hang"), timeoutMs));
  try {
    return await Promise.race([keepAliveGet(conn), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A connection opened before the rollout, used every 250 ms until it ends. */
interface LongLived {
  pod?: string;
  answers: { at: number; pod: string }[];
  endedAt?: number;
  /** What happened: "ended" (EOF/reset), "hang" (no answer, no end) or "open" (never ended). */
  end: "ended" | "hang" | "open";
  done: Promise<void>;
}

async function openLongLived(port: number, until: () => boolean): Promise<LongLived> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const ll: LongLived = { answers: [], end: "open", done: Promise.resolve() };
  const first = await keepAliveGetOrHang(conn);
  assert.ok(typeof first === "string" && first !== "hang", `long-lived connection: ${first}`);
  ll.pod = first;
  ll.answers.push({ at: Date.now(), pod: first });
  ll.done = (async () => {
    try {
      for (let i = 0; i < 400 && !until(); i++) {
        await sleep(250);
        const r = await keepAliveGetOrHang(conn);
        if (r === "hang") {
          ll.end = "hang";
          return;
        }
        if (r === null) {
          ll.end = "ended";
          ll.endedAt = Date.now();
          // Ended once: the connection stays ended (EOF/reset at once, no hang).
          const again = await keepAliveGetOrHang(conn, 2000);
          if (again !== null) ll.end = "hang";
          return;
        }
        ll.answers.push({ at: Date.now(), pod: r });
      }
    } finally {
      conn.close();
    }
  })();
  return ll;
}

/** Checks a long-lived connection against its pod's life. */
function checkLongLived(ll: LongLived, lives: Map<string, PodLife>, graceMs: number, i: number) {
  const life = lives.get(ll.pod!);
  const what = `long-lived connection ${i} (pod ${ll.pod}, life ${
    JSON.stringify(life)
  }, end ${ll.end} at ${ll.endedAt}, ${ll.answers.length} answers)`;
  assert.ok(ll.answers.every((a) => a.pod === ll.pod), `${what}: always the same pod`);
  assert.ok(life?.terminatingAt, `${what}: its pod was deleted by the rollout`);
  assert.equal(ll.end, "ended", `${what}: ended cleanly (EOF or reset), once`);
  // Served after its pod was deleted, until the grace period ended (±polling); not after removal.
  assert.ok(
    ll.answers.some((a) => a.at > life.terminatingAt! + 300),
    `${what}: still served while its pod was terminating`,
  );
  assert.ok(
    ll.endedAt! >= life.terminatingAt! + graceMs - 600,
    `${what}: ended before the grace period`,
  );
  assert.ok(
    life.goneAt === undefined || ll.endedAt! <= life.goneAt + 1500,
    `${what}: still open after its pod was removed`,
  );
}

interface Paths {
  name: string;
  once: () => Promise<Outcome>;
  workers: number;
}

/**
 * Runs the rollout of deploy/`app` under load on every path; returns the tallies by name and
 * the old pods' lives.
 */
async function rolloutUnderLoad(
  kc: string,
  app: string,
  paths: Paths[],
  longLivedPort: number,
  graceMs: number,
): Promise<{ tallies: Map<string, Tally>; lives: Map<string, PodLife> }> {
  const before = new Set(
    (await kubectl(
      kc,
      "-n",
      NS,
      "get",
      "pods",
      "-l",
      `app=${app}`,
      "-o",
      "jsonpath={.items[*].metadata.name}",
    ))
      .split(" ").filter((s) => s),
  );
  // A new Service's endpoints reach the forwarder after the propagation delay: wait until the
  // cluster IP itself answers (bounded), then every path must answer, from the current pods.
  for (const p of paths.filter((p) => p.name.startsWith("direct"))) {
    const t0 = Date.now();
    while (!(await p.once()).ok && Date.now() - t0 < 10_000) await sleep(200);
  }
  for (const p of paths) {
    const r = await p.once();
    assert.ok(r.ok && before.has(r.pod), `${p.name} before the rollout: ${JSON.stringify(r)}`);
  }
  const watcher = await watchPods(app);
  let finished = false;
  const longLived = await Promise.all(
    [0, 1, 2].map(() => openLongLived(longLivedPort, () => finished)),
  );
  const loops: LoadLoop[] = paths.map((p) => startLoad(p.name, p.once, { workers: p.workers }));
  const tallies = new Map<string, Tally>();
  const restartAt = Date.now();
  try {
    await kubectl(kc, "-n", NS, "rollout", "restart", `deploy/${app}`);
    await kubectl(kc, "-n", NS, "rollout", "status", `deploy/${app}`, "--timeout=90s");
    // The rollout is over when the old pods are gone (grace periods included); then 3 s more.
    const t0 = Date.now();
    while (
      [...before].some((p) => watcher.lives.get(p)?.goneAt === undefined) &&
      Date.now() - t0 < 30_000
    ) {
      await sleep(200);
    }
    await sleep(3000);
  } finally {
    for (const l of loops) tallies.set(l.name, await l.stop());
    finished = true;
    await Promise.all(longLived.map((l) => l.done));
    await watcher.stop();
  }
  // The timeline, relative to the restart: pods' deletion/removal, and the failures.
  const rel = (t: number) => `${((t - restartAt) / 1000).toFixed(2)}s`;
  for (const [name, t] of tallies) {
    console.log(formatTally(name, t));
    if (t.failures.length) {
      console.log(`  failures at ${t.failures.map((f) => `${rel(f.at)} ${f.error}`).join(", ")}`);
    }
  }
  for (const [pod, life] of watcher.lives) {
    const t = (x?: number) => x === undefined ? "-" : rel(x);
    console.log(`  pod ${pod}: terminating ${t(life.terminatingAt)}, removed ${t(life.goneAt)}`);
  }
  const oldGone = [...before].every((p) => watcher.lives.get(p)?.goneAt !== undefined);
  assert.ok(oldGone, `old pods removed: ${JSON.stringify([...watcher.lives])}`);
  longLived.forEach((ll, i) => checkLongLived(ll, watcher.lives, graceMs, i));
  // After: every path answers from new pods only.
  for (const p of paths) {
    for (let i = 0; i < 3; i++) {
      const r = await p.once();
      assert.ok(r.ok && !before.has(r.pod), `${p.name} after the rollout: ${JSON.stringify(r)}`);
    }
  }
  // During: new pods answered on every path.
  for (const [name, t] of tallies) {
    assert.ok([...t.pods.keys()].some((p) => !before.has(p)), `${name}: no answer from a new pod`);
    assert.ok(t.ok > 20, `${name}: too few requests (${t.ok}) to mean anything`);
  }
  return { tallies, lives: watcher.lives };
}

async function clusterIP(kc: string, svc: string): Promise<string> {
  return (await kubectl(kc, "-n", NS, "get", "svc", svc, "-o", "jsonpath={.spec.clusterIP}"))
    .trim();
}

/**
 * relay's failure rate is not above direct's beyond sampling noise (one-sided, 3 standard
 * errors): with failures that hit a random endpoint per connection, two equal loops do not give
 * equal counts.
 */
function notWorseThan(relay: Tally, direct: Tally): boolean {
  const n1 = relay.ok + relay.failed;
  const n2 = direct.ok + direct.failed;
  const p1 = relay.failed / n1;
  const p2 = direct.failed / n2;
  const p = (relay.failed + direct.failed) / (n1 + n2);
  const se = Math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2));
  return p1 <= p2 + 3 * se;
}

/**
 * Runs one `kubectl relay -f` per group of targets (lines of a -f file), gives their ports (in
 * order) to `fn`, then stops them: exit code 0 each.
 */
async function withRelays<T>(
  kc: string,
  groups: string[][],
  fn: (ports: number[][]) => Promise<T>,
): Promise<T> {
  const relays: RelayProcess[] = [];
  try {
    for (const lines of groups) {
      const file = await Deno.makeTempFile({ suffix: ".txt" });
      await Deno.writeTextFile(file, lines.join("\n") + "\n");
      try {
        relays.push(await startRelay(kc, ["-f", file], { forwardLines: lines.length }));
      } finally {
        await Deno.remove(file);
      }
    }
    return await fn(relays.map((r) => r.ports));
  } finally {
    for (const r of relays) assert.equal(await r.stop(), 0, r.err.join("\n"));
  }
}

Deno.test({
  name:
    "rollout (no preStop): direct cluster-IP connections fail during propagation, svc/ no more; deploy/ follows ready pods",
  ...opts,
}, async () => {
  const kc = await setup();
  const ip = await clusterIP(kc, "plain");
  const targets = [[
    `-n ${NS} deploy/plain :80`,
    `-n ${NS} svc/plain :80`,
    `-n ${NS} svc/plain :53@udp`,
  ]];
  await withRelays(kc, targets, async ([[deployPort, svcPort, udpSvcPort]]) => {
    const { tallies: t, lives } = await rolloutUnderLoad(
      kc,
      "plain",
      [
        {
          name: "relay deploy/plain tcp",
          once: () => httpOnce("127.0.0.1", deployPort),
          workers: 4,
        },
        { name: "relay svc/plain tcp", once: () => httpOnce("127.0.0.1", svcPort), workers: 2 },
        { name: "direct cluster IP tcp", once: () => httpOnce(ip, 80), workers: 2 },
        { name: "relay svc/plain udp", once: () => udpWhoami("127.0.0.1", udpSvcPort), workers: 2 },
        { name: "direct cluster IP udp", once: () => udpWhoami(ip, 53), workers: 2 },
      ],
      deployPort,
      2000,
    );
    // deploy/: only the accept-queue race at the moment a pod closes its listener (see the module
    // doc), at most once per worker and deleted pod; a client that kept using a deleted pod would
    // fail during its whole grace period.
    const deploy = t.get("relay deploy/plain tcp")!;
    const deletions = [...lives.values()].flatMap((l) => l.terminatingAt ?? []);
    assert.ok(deploy.failed <= 4 * deletions.length, formatTally("deploy/", deploy));
    for (const f of deploy.failures) {
      assert.ok(
        deletions.some((d) => f.at >= d - 1000 && f.at <= d + 500),
        `deploy/ failure at ${f.at} (${f.error}) is not at a pod's deletion (${deletions})`,
      );
    }
    // kube-proxy semantics: a deleted pod without preStop still gets new connections for the
    // propagation delay and refuses them; UDP flows to it get no answer.
    const dTcp = t.get("direct cluster IP tcp")!;
    const dUdp = t.get("direct cluster IP udp")!;
    assert.ok(
      dTcp.failed > 0,
      "direct TCP to the cluster IP fails during propagation (strict harness)",
    );
    assert.ok(
      dUdp.failed > 0,
      "direct UDP to the cluster IP fails during propagation (strict harness)",
    );
    const rTcp = t.get("relay svc/plain tcp")!;
    const rUdp = t.get("relay svc/plain udp")!;
    assert.ok(
      notWorseThan(rTcp, dTcp),
      `svc/ TCP: relay ${formatTally("", rTcp)} vs direct ${formatTally("", dTcp)}`,
    );
    assert.ok(
      notWorseThan(rUdp, dUdp),
      `svc/ UDP: relay ${formatTally("", rUdp)} vs direct ${formatTally("", dUdp)}`,
    );
  });
});

Deno.test({
  name:
    "rollout (preStop covers propagation): 0 failed for deploy/ (TCP, UDP); svc/ relay ≤ direct",
  ...opts,
}, async () => {
  const kc = await setup();
  const ip = await clusterIP(kc, "graceful");
  // deploy/ and svc/ in two relays (two agents), so that the svc/ traffic does not share the
  // deploy/ relay's tunnel.
  const targets = [
    [`-n ${NS} deploy/graceful :80`, `-n ${NS} deploy/graceful :53@udp`],
    [`-n ${NS} svc/graceful :80`, `-n ${NS} svc/graceful :53@udp`],
  ];
  await withRelays(kc, targets, async ([[deployPort, udpDeployPort], [svcPort, udpSvcPort]]) => {
    const { tallies: t } = await rolloutUnderLoad(
      kc,
      "graceful",
      [
        {
          name: "relay deploy/graceful tcp",
          once: () => httpOnce("127.0.0.1", deployPort),
          workers: 3,
        },
        {
          name: "relay deploy/graceful udp",
          once: () => udpWhoami("127.0.0.1", udpDeployPort),
          workers: 2,
        },
        { name: "relay svc/graceful tcp", once: () => httpOnce("127.0.0.1", svcPort), workers: 2 },
        { name: "direct cluster IP tcp", once: () => httpOnce(ip, 80), workers: 2 },
        {
          name: "relay svc/graceful udp",
          once: () => udpWhoami("127.0.0.1", udpSvcPort),
          workers: 2,
        },
        { name: "direct cluster IP udp", once: () => udpWhoami(ip, 53), workers: 2 },
      ],
      deployPort,
      4000,
    ); // preStop 2 s, then kubelet's 2 s minimum after SIGTERM
    assert.equal(t.get("relay deploy/graceful tcp")!.failed, 0, "deploy/ TCP: no failed request");
    assert.equal(t.get("relay deploy/graceful udp")!.failed, 0, "deploy/ UDP: no failed query");
    assert.ok(
      t.get("relay svc/graceful tcp")!.failed <= t.get("direct cluster IP tcp")!.failed,
      "svc/ TCP: relay ≤ direct",
    );
    const rUdp = t.get("relay svc/graceful udp")!;
    const dUdp = t.get("direct cluster IP udp")!;
    assert.ok(
      notWorseThan(rUdp, dUdp),
      `svc/ UDP: relay ${formatTally("", rUdp)} vs direct ${formatTally("", dUdp)}`,
    );
  });
});
