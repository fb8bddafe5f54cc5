/**
 * `deno task demo`: starts the local control plane, deploys a sample app, runs `kubectl relay`
 * against it and makes visible requests through it: HTTP via svc/, DNS over UDP via deploy/ and to
 * the cluster DNS (svc/kube-dns), a host/ name resolved inside the cluster, and a rolling update of
 * the Service's pods under fresh-connection traffic (each request counted), then waits for Ctrl-C.
 * `--once` exits after the showcase (used by the tests).
 */
import { sharedCluster, startCluster } from "../tests/cluster/cluster.ts";
import { lookupA } from "../tests/cluster/dns_probe.ts";
import { kubectl, podNames, type RelayProcess, startRelay } from "../tests/_lib/relay.ts";
import { httpOnce, startLoad } from "../tests/_lib/traffic.ts";
import { dnsQuery } from "./dns_query.ts";

const once = Deno.args.includes("--once");
const say = (line: string) => console.log(`\x1b[1m==>\x1b[0m ${line}`);
const indent = (lines: string[]) => lines.forEach((l) => console.log(`    ${l}`));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One GET on a new connection; the answering pod's name. */
async function httpGet(port: number): Promise<string> {
  const r = await httpOnce("127.0.0.1", port);
  if (!r.ok) throw new Error(`request failed: ${r.error}`);
  return r.pod;
}

async function main(): Promise<number> {
  say(
    "Starting a local Kubernetes control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok, CoreDNS)…",
  );
  // Under the test suite (RELAY_TEST_CLUSTER set) the demo uses the suite's cluster.
  const cluster = Deno.env.get("RELAY_TEST_CLUSTER")
    ? await sharedCluster()
    : await startCluster({ log: (l) => console.log(`    ${l}`) });
  const kc = cluster.kubeconfig;
  const relays: RelayProcess[] = [];
  try {
    say(`Cluster ready. Kubeconfig: ${kc}`);
    console.log(
      `    Try it yourself in another terminal:  export KUBECONFIG=${kc} PATH=$PWD/bin:$PATH`,
    );
    say("Deploying the sample app (namespace demo: web ×2 + Service, dns)…");
    await kubectl(kc, "apply", "-f", new URL("./app.yaml", import.meta.url).pathname);
    await kubectl(kc, "-n", "demo", "rollout", "status", "deploy/web", "--timeout=90s");
    await kubectl(kc, "-n", "demo", "rollout", "status", "deploy/dns", "--timeout=90s");
    indent((await kubectl(kc, "-n", "demo", "get", "pods", "-o", "wide")).trim().split("\n"));

    const targets = [
      "-n demo svc/web :http",
      "-n demo deploy/dns :53@udp",
      "host/web.demo :80",
      "-n kube-system svc/kube-dns :53@udp",
    ];
    say(`$ kubectl relay -f targets.txt   (${targets.join(" | ")})`);
    const file = await Deno.makeTempFile({ suffix: ".txt" });
    await Deno.writeTextFile(file, targets.join("\n") + "\n");
    const relay = await startRelay(kc, ["-f", file], { forwardLines: targets.length });
    await Deno.remove(file);
    relays.push(relay);
    indent([...relay.err, ...relay.out]);
    const [webPort, dnsPort, hostPort, kubeDnsPort] = relay.ports;

    // As on any cluster, the Service answers once its new endpoints have reached kube-proxy.
    for (let i = 0; i < 50 && !(await httpOnce("127.0.0.1", webPort)).ok; i++) await sleep(200);
    say(`HTTP through svc/web  (curl http://127.0.0.1:${webPort}/)`);
    for (let i = 0; i < 3; i++) indent([`served by pod ${await httpGet(webPort)}`]);
    say(`DNS over UDP through deploy/dns  (dig @127.0.0.1 -p ${dnsPort} whoami.test.relay TXT)`);
    indent([`answered by pod ${await dnsQuery("127.0.0.1", dnsPort, "whoami.test.relay")}`]);
    const name = "kubernetes.default.svc.cluster.local";
    say(
      `Cluster DNS over UDP through svc/kube-dns  (dig @127.0.0.1 -p ${kubeDnsPort} ${name})`,
    );
    const apiIP =
      (await kubectl(kc, "get", "svc", "kubernetes", "-o", "jsonpath={.spec.clusterIP}"))
        .trim();
    const answer = await lookupA("127.0.0.1", kubeDnsPort, name, "udp", 5000);
    indent([
      `kube-dns answered ${name} A ${answer?.join(", ") ?? "nothing"}` +
      ` (the kubernetes Service is ${apiIP})`,
    ]);
    say(
      `host/web.demo, resolved by the cluster DNS inside the cluster  (curl http://127.0.0.1:${hostPort}/)`,
    );
    indent([`served by pod ${await httpGet(hostPort)}`]);

    say(
      "Rolling update of web while 3 clients each open a new connection per request: kubectl -n demo rollout restart deploy/web",
    );
    const before = await podNames(kc, "demo", "app=web");
    const load = startLoad("svc/web", () => httpOnce("127.0.0.1", webPort), { workers: 3 });
    try {
      await kubectl(kc, "-n", "demo", "rollout", "restart", "deploy/web");
      await kubectl(kc, "-n", "demo", "rollout", "status", "deploy/web", "--timeout=60s");
      // Until the old pods are gone (their grace period included), then 3 s more.
      await kubectl(
        kc,
        "-n",
        "demo",
        "wait",
        "--for=delete",
        ...before.map((p) => `pod/${p}`),
        "--timeout=60s",
      ).catch(() => "");
      await sleep(3000);
    } finally {
      await load.stop();
    }
    const t = load.tally;
    indent(
      [...t.pods].map(([pod, n]) =>
        `${n.toString().padStart(4)} responses from ${pod}${
          before.includes(pod) ? " (old)" : " (new)"
        }`
      ),
    );
    indent([
      `${t.ok + t.failed} requests, each on a new TCP connection: ${t.failed} failed requests` +
      `${t.failed ? ` (${[...t.errors].map(([e, n]) => `${e}×${n}`).join(", ")})` : ""}` +
      `; the relay stayed up (pid ${relay.child.pid})`,
    ]);
    indent([`after the update: served by pod ${await httpGet(webPort)}`]);

    if (!once) {
      say(`Relay is running. KUBECONFIG=${kc}. Press Ctrl-C to stop and clean up.`);
      await new Promise<void>((resolve) => Deno.addSignalListener("SIGINT", () => resolve()));
    }
    say("Stopping the relay (its agent Job is deleted) and the cluster…");
    return 0;
  } finally {
    for (const r of relays) await r.stop("SIGINT");
    await cluster.stop();
    say("Done.");
  }
}

if (import.meta.main) Deno.exit(await main());
