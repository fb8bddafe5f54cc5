/**
 * `deno task bench [--quick]`: kubectl relay vs kubectl port-forward vs a direct loopback
 * connection, on the local control plane, to the same pod's echo server.
 *
 * Prints a table with ratios and writes bench/results/<date>.json. Every phase is bounded in
 * count and time; traffic stays on loopback.
 */
import { startCluster } from "../tests/cluster/cluster.ts";
import { kubectl, relayEnv, type RelayProcess, startRelay } from "../tests/_lib/relay.ts";
import { dnsQueryLoop, latency, manyConnections, throughput } from "./measure.ts";
import { PeakRss, rssMiB } from "../tests/_lib/rss.ts";

const quick = Deno.args.includes("--quick");
const NS = "relay-bench";
const ECHO_PORT = 7000;
const DNS_PORT = 5353;
const SIZES = quick
  ? { bytes: 128 << 20, conns: 200, concurrent: 200, perConn: 256 << 10, dnsQueries: 2000 }
  : { bytes: 1 << 30, conns: 1000, concurrent: 1000, perConn: 1 << 20, dnsQueries: 10000 };

const MANIFEST = `apiVersion: v1
kind: Namespace
metadata: { name: ${NS} }
---
apiVersion: v1
kind: Pod
metadata: { name: echo, namespace: ${NS}, labels: { app: echo } }
spec:
  containers:
    - name: echo
      image: relay-test/echo
      ports:
        - { name: echo, containerPort: ${ECHO_PORT}, protocol: TCP }
        - { name: dns, containerPort: ${DNS_PORT}, protocol: UDP }
`;

/** One path's results. */
interface PathResult {
  path: string;
  throughputMiBs?: number;
  latencyP50Ms?: number;
  latencyP99Ms?: number;
  concurrentWallS?: number;
  concurrentErrors?: number;
  dnsQps?: number;
  dnsLossPct?: number;
  clientIdleRssMiB?: number;
  agentIdleRssMiB?: number;
  clientPeakRssMiB?: number;
  agentPeakRssMiB?: number;
}

async function kubectlPortForward(
  kc: string,
  pod: string,
  port: number,
): Promise<{ child: Deno.ChildProcess; port: number }> {
  const child = new Deno.Command("kubectl", {
    args: ["-n", NS, "port-forward", `pod/${pod}`, `:${port}`],
    env: relayEnv(kc),
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
    const m = /Forwarding from 127\.0\.0\.1:(\d+)/.exec(text);
    if (m) {
      (async () => {
        while (!(await reader.read()).done) { /* drain */ }
      })();
      return { child, port: Number(m[1]) };
    }
  }
  throw new Error(`kubectl port-forward did not start: ${text}`);
}

async function measurePath(
  name: string,
  host: string,
  port: number,
  dnsPort: number | undefined,
  pids: () => number[],
  agentPid?: () => number | undefined,
): Promise<PathResult> {
  const rss = new PeakRss(pids);
  const agentRss = agentPid
    ? new PeakRss(() => [agentPid()].filter((p): p is number => !!p))
    : undefined;
  const r: PathResult = {
    path: name,
    clientIdleRssMiB: rssMiB(pids()[0]),
    agentIdleRssMiB: rssMiB(agentPid?.()),
  };
  console.error(`[${name}] throughput (${SIZES.bytes >> 20} MiB echoed, SHA-256 checked)…`);
  r.throughputMiBs = await throughput(host, port, SIZES.bytes);
  console.error(`[${name}] latency (${SIZES.conns} sequential connections)…`);
  const lat = await latency(host, port, SIZES.conns);
  r.latencyP50Ms = lat.p50;
  r.latencyP99Ms = lat.p99;
  console.error(
    `[${name}] ${SIZES.concurrent} concurrent connections × ${SIZES.perConn >> 10} KiB…`,
  );
  const many = await manyConnections(host, port, SIZES.concurrent, SIZES.perConn);
  r.concurrentWallS = many.wallS;
  r.concurrentErrors = many.errors;
  if (dnsPort !== undefined) {
    console.error(`[${name}] DNS over UDP (${SIZES.dnsQueries} queries)…`);
    const dns = await dnsQueryLoop(host, dnsPort, SIZES.dnsQueries);
    r.dnsQps = dns.qps;
    r.dnsLossPct = dns.lossPct;
  }
  r.clientPeakRssMiB = rss.stop();
  if (agentRss) r.agentPeakRssMiB = agentRss.stop();
  return r;
}

function fmt(n: number | undefined, digits = 1): string {
  return n === undefined ? "—" : n.toFixed(digits);
}

function ratio(a: number | undefined, b: number | undefined): string {
  return a === undefined || b === undefined || b === 0 ? "—" : `${(a / b).toFixed(2)}×`;
}

function table(results: PathResult[]): string {
  const [direct, kpf, relay] = results;
  const rows: [string, (r: PathResult) => number | undefined, number][] = [
    ["TCP throughput (MiB/s)", (r) => r.throughputMiBs, 0],
    ["new connection p50 (ms)", (r) => r.latencyP50Ms, 2],
    ["new connection p99 (ms)", (r) => r.latencyP99Ms, 2],
    [`${SIZES.concurrent} concurrent conns, wall (s)`, (r) => r.concurrentWallS, 2],
    [`${SIZES.concurrent} concurrent conns, errors`, (r) => r.concurrentErrors, 0],
    ["UDP DNS (queries/s)", (r) => r.dnsQps, 0],
    ["UDP DNS loss (%)", (r) => r.dnsLossPct, 2],
    ["client idle RSS (MiB)", (r) => r.clientIdleRssMiB, 0],
    ["agent idle RSS (MiB)", (r) => r.agentIdleRssMiB, 0],
    ["client peak RSS (MiB)", (r) => r.clientPeakRssMiB, 0],
    ["agent peak RSS (MiB)", (r) => r.agentPeakRssMiB, 0],
  ];
  const head =
    `| metric | direct | kubectl port-forward | kubectl relay | relay / kubectl | relay / direct |\n|---|---|---|---|---|---|`;
  const lines = rows.map(([label, f, d]) =>
    `| ${label} | ${fmt(f(direct), d)} | ${fmt(f(kpf), d)} | ${fmt(f(relay), d)} | ${
      ratio(f(relay), f(kpf))
    } | ${ratio(f(relay), f(direct))} |`
  );
  return [head, ...lines].join("\n");
}

async function main(): Promise<void> {
  const t0 = performance.now();
  const cluster = await startCluster({ log: (l) => console.error(`  ${l}`) });
  const kc = cluster.kubeconfig;
  let relay: RelayProcess | undefined;
  let kpf: Deno.ChildProcess | undefined;
  try {
    const file = await Deno.makeTempFile({ suffix: ".yaml" });
    await Deno.writeTextFile(file, MANIFEST);
    await kubectl(kc, "apply", "-f", file);
    await Deno.remove(file);
    await kubectl(kc, "-n", NS, "wait", "--for=condition=Ready", "pod/echo", "--timeout=60s");
    await new Promise((r) => setTimeout(r, 1000)); // let the runtime bind the echo server
    const podIP =
      (await kubectl(kc, "-n", NS, "get", "pod", "echo", "-o", "jsonpath={.status.podIP}")).trim();

    const results: PathResult[] = [];
    results.push(await measurePath("direct", podIP, ECHO_PORT, DNS_PORT, () => []));

    const pf = await kubectlPortForward(kc, "echo", ECHO_PORT);
    kpf = pf.child;
    results.push(
      await measurePath(
        "kubectl port-forward",
        "127.0.0.1",
        pf.port,
        undefined,
        () => [pf.child.pid],
      ),
    );
    kpf.kill("SIGINT");
    await kpf.status;
    kpf = undefined;

    relay = await startRelay(kc, ["-n", NS, "pod/echo", `:${ECHO_PORT}`, `:${DNS_PORT}@udp`], {
      forwardLines: 2,
    });
    const agentLine = await relay.waitFor(/^Agent .* \(pod (\S+)\) ready/);
    const agentPod = agentLine.match(/\(pod (\S+)\)/)![1];
    const agentPid = () => {
      try {
        return Number(
          Deno.readTextFileSync(`${cluster.dir}/agents/default_${agentPod}.pid`).trim(),
        );
      } catch {
        return undefined;
      }
    };
    const relayPid = relay.child.pid;
    results.push(
      await measurePath(
        "kubectl relay",
        "127.0.0.1",
        relay.ports[0],
        relay.ports[1],
        () => [relayPid],
        agentPid,
      ),
    );

    const text = table(results);
    console.log(
      `\nkubectl-relay benchmark (${quick ? "quick" : "full"}), ${
        new Date().toISOString()
      }, ${Deno.build.target}, ${navigator.hardwareConcurrency} cores\n`,
    );
    console.log(text);
    const out = new URL(
      `./results/${new Date().toISOString().slice(0, 19).replaceAll(":", "-")}${
        quick ? "-quick" : ""
      }.json`,
      import.meta.url,
    );
    await Deno.writeTextFile(
      out,
      JSON.stringify(
        {
          date: new Date().toISOString(),
          quick,
          sizes: SIZES,
          machine: { target: Deno.build.target, cores: navigator.hardwareConcurrency },
          results,
        },
        null,
        2,
      ) + "\n",
    );
    console.log(`\nwritten ${out.pathname} in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  } finally {
    kpf?.kill("SIGINT");
    await relay?.stop("SIGINT");
    await cluster.stop();
  }
}

if (import.meta.main) await main();
