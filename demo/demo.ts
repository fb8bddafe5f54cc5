/**
 * `deno task demo`: starts the local control plane, deploys a sample app, runs `kubectl relay`
 * against it and makes visible requests through it (HTTP via svc/, DNS over UDP via deploy/,
 * a host/ request), performs a rolling update while traffic flows, then waits for Ctrl-C.
 * `--once` exits after the showcase (used by the tests).
 */
import { sharedCluster, startCluster } from "../tests/cluster/cluster.ts";
import { kubectl, podNames, type RelayProcess, startRelay } from "../tests/_lib/relay.ts";
import { dnsQuery } from "./dns_query.ts";

const once = Deno.args.includes("--once");
const say = (line: string) => console.log(`\x1b[1m==>\x1b[0m ${line}`);
const indent = (lines: string[]) => lines.forEach((l) => console.log(`    ${l}`));

async function httpGet(port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(5000) });
  return (await res.text()).trim();
}

async function main(): Promise<number> {
  say(
    "Starting a local Kubernetes control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)…",
  );
  // Under the test suite (RELAY_TEST_CLUSTER set) the demo uses the suite's cluster: two local
  // clusters would claim the same loopback pod and service addresses.
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

    say(
      "$ kubectl relay -n demo svc/web :http   (plus deploy/dns :53@udp and host/web.demo, from a -f file)",
    );
    const file = await Deno.makeTempFile({ suffix: ".txt" });
    await Deno.writeTextFile(
      file,
      "-n demo svc/web :http\n-n demo deploy/dns :53@udp\nhost/web.demo :80\n",
    );
    const relay = await startRelay(kc, ["-f", file], { forwardLines: 3 });
    relays.push(relay);
    indent([...relay.err, ...relay.out]);
    const [webPort, dnsPort, hostPort] = relay.ports;

    say(`HTTP through svc/web  (curl http://127.0.0.1:${webPort}/)`);
    for (let i = 0; i < 3; i++) indent([`served by pod ${await httpGet(webPort)}`]);
    say(`DNS over UDP through deploy/dns  (dig @127.0.0.1 -p ${dnsPort} whoami.test.relay TXT)`);
    indent([`answered by pod ${await dnsQuery("127.0.0.1", dnsPort, "whoami.test.relay")}`]);
    say(
      `host/web.demo, resolved by cluster DNS inside the cluster  (curl http://127.0.0.1:${hostPort}/)`,
    );
    indent([`served by pod ${await httpGet(hostPort)}`]);

    say("Rolling update while traffic flows: kubectl -n demo rollout restart deploy/web");
    const before = new Set(
      await podNames(kc, "demo", "app=web"),
    );
    await kubectl(kc, "-n", "demo", "rollout", "restart", "deploy/web");
    const seen = new Map<string, number>();
    let errors = 0;
    const deadline = Date.now() + 20_000;
    let sawNew = false;
    for (let i = 0; i < 400 && Date.now() < deadline; i++) {
      try {
        const pod = await httpGet(webPort);
        seen.set(pod, (seen.get(pod) ?? 0) + 1);
        if (!before.has(pod)) sawNew = true;
      } catch {
        errors++;
      }
      if (sawNew && i >= 40) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    await kubectl(kc, "-n", "demo", "rollout", "status", "deploy/web", "--timeout=60s");
    indent(
      [...seen].map(([pod, n]) =>
        `${n.toString().padStart(4)} responses from ${pod}${before.has(pod) ? " (old)" : " (new)"}`
      ),
    );
    indent([`${errors} failed requests; the relay stayed up (pid ${relay.child.pid})`]);
    indent([`after the update: served by pod ${await httpGet(webPort)}`]);
    await Deno.remove(file);

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
