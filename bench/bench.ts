/**
 * `deno task bench [--quick]`: kubectl relay vs kubectl port-forward vs a direct loopback
 * connection, on the local control plane, to the same pod's echo server.
 *
 * Prints a table with ratios and writes bench/results/<date>.json. Every phase is bounded in
 * count and time; traffic stays on loopback.
 */
import { startCluster } from "../tests/cluster/cluster.ts";
import { kubectl, relayEnv, type RelayProcess, startRelay } from "../tests/_lib/relay.ts";
import {
  dnsQueryLoop,
  echoIdle,
  echoUnderLoad,
  latency,
  manyConnections,
  throughput,
} from "./measure.ts";
import { cpuSeconds } from "./cpu.ts";
import {
  firstByte,
  type FirstByteRun,
  median,
  RELAY_PHASES,
  relayPhases,
  type StartedForward,
} from "./first_byte.ts";
import { PeakRss, rssMiB } from "../tests/_lib/rss.ts";
import { detectMemoryController, PodCgroup } from "../tests/cluster/runtime/cgroup.ts";

const quick = Deno.args.includes("--quick");
const NS = "relay-bench";
const ECHO_PORT = 7000;
const DNS_PORT = 5353;
const SIZES = {
  ...(quick
    ? { bytes: 128 << 20, conns: 200, concurrent: 200, perConn: 256 << 10, dnsQueries: 2000 }
    : { bytes: 1 << 30, conns: 1000, concurrent: 1000, perConn: 1 << 20, dnsQueries: 10000 }),
  /** 1-byte echoes per latency-under-load measurement (and its idle reference). */
  echoSamples: 2000,
  /** Bound on one latency-under-load measurement (the bulk transfer stops after it). */
  loadTimeoutMs: quick ? 60_000 : 180_000,
  /** Spawns per time-to-first-byte measurement. */
  firstByteRuns: 5,
};

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
  /** Peak RSS of the client during the concurrent-connections phase only (sampled, MiB). */
  clientConcurrentPeakRssMiB?: number;
  /** The same for the agent. */
  agentConcurrentPeakRssMiB?: number;
  /**
   * The agent's peak anonymous RSS in that phase (`RssAnon`: its own allocations, without the
   * file pages of the Deno binary it runs from).
   */
  agentConcurrentPeakAnonMiB?: number;
  /**
   * The agent's memory cgroup (the harness enforces the pod's limit with it) during the
   * concurrent-connections phase: highest usage sampled (MiB), what the OOM killer compares with
   * the limit.
   */
  agentConcurrentCgroupPeakMiB?: number;
  /** The kernel's peak of the agent's cgroup over the agent's life up to the end of that phase. */
  agentCgroupPeakMiB?: number;
  /** The agent's memory limit (the cgroup's, MiB). */
  agentCgroupLimitMiB?: number;
  /** User + system CPU seconds of the client per GiB echoed in the throughput run. */
  clientCpuSPerGiB?: number;
  /** The same for the agent. */
  agentCpuSPerGiB?: number;
  /** The same for the cluster's processes (kube-apiserver, kwok, the pod runtime's echo server). */
  clusterCpuSPerGiB?: Record<string, number>;
  /** User + system CPU seconds per process (client, agent, cluster) during the concurrent run. */
  concurrentCpuS?: Record<string, number>;
  /** 1-byte echo round trips on an established connection, nothing else moving (ms). */
  echoIdleP50Ms?: number;
  echoIdleP99Ms?: number;
  echoIdleMaxMs?: number;
  echoIdleSamples?: number;
  /** The same while a second connection echoes bulk data through the same forward (ms). */
  echoLoadedP50Ms?: number;
  echoLoadedP99Ms?: number;
  echoLoadedMaxMs?: number;
  echoLoadedSamples?: number;
  /** What that bulk connection moved meanwhile (MiB echoed) and at what rate (MiB/s). */
  loadBulkMiB?: number;
  loadBulkMiBs?: number;
  /** Spawn to first echoed byte on a new local connection: median and every run (s). */
  firstByteMedianS?: number;
  firstByteRunsS?: number[];
  /** The relay's startup phases: median over the runs (ms), and every run. */
  firstBytePhasesMs?: Record<string, number>;
  firstBytePhaseRunsMs?: Record<string, number>[];
  /**
   * The same with an agent of this user and namespace already running (`--reuse-agent`): median
   * and every run (s). Only the relay has one; kubectl port-forward has no warm start.
   */
  firstByteWarmMedianS?: number;
  firstByteWarmRunsS?: number[];
  /** The relay with `--direct` (one port-forward per connection): new connection p50/p99 (ms). */
  directModeLatencyP50Ms?: number;
  directModeLatencyP99Ms?: number;
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
  // A kubectl that prints nothing is killed, so the read below ends.
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  try {
    while (true) {
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
  } finally {
    clearTimeout(timer);
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
  agentCgroup?: () => PodCgroup | undefined,
): Promise<PathResult> {
  const rss = new PeakRss(pids);
  const agentPids = () => [agentPid?.()].filter((p): p is number => !!p);
  const agentRss = agentPid ? new PeakRss(agentPids) : undefined;
  const r: PathResult = {
    path: name,
    clientIdleRssMiB: rssMiB(pids()[0]),
    agentIdleRssMiB: rssMiB(agentPid?.()),
  };
  progress(name, `throughput (${SIZES.bytes >> 20} MiB echoed, SHA-256 checked)…`);
  const cpuOf = (): Record<string, number | undefined> => ({
    client: cpuSeconds(pids()[0]),
    agent: cpuSeconds(agentPid?.()),
    ...Object.fromEntries(
      // Without descendants: the agent is a child of the runtime that plays the pods.
      Object.entries(clusterPids).map(([proc, pid]) => [proc, cpuSeconds(pid, false)]),
    ),
  });
  /** CPU seconds each process used while `work` ran. */
  const cpuDuring = async (work: () => Promise<void>): Promise<Record<string, number>> => {
    const before = cpuOf();
    await work();
    const after = cpuOf();
    const used: Record<string, number> = {};
    for (const [proc, b] of Object.entries(before)) {
      const a = after[proc];
      if (a !== undefined && b !== undefined) used[proc] = a - b;
    }
    return used;
  };
  const perGiB = await cpuDuring(async () => {
    r.throughputMiBs = await throughput(host, port, SIZES.bytes);
  });
  for (const proc of Object.keys(perGiB)) perGiB[proc] /= SIZES.bytes / (1 << 30);
  ({ client: r.clientCpuSPerGiB, agent: r.agentCpuSPerGiB } = perGiB);
  delete perGiB.client;
  delete perGiB.agent;
  r.clusterCpuSPerGiB = perGiB;
  progress(name, `latency (${SIZES.conns} sequential connections)…`);
  const lat = await latency(host, port, SIZES.conns);
  r.latencyP50Ms = lat.p50;
  r.latencyP99Ms = lat.p99;
  progress(
    name,
    `${SIZES.concurrent} concurrent connections × ${SIZES.perConn >> 10} KiB…`,
  );
  const manyRss = new PeakRss(pids);
  const manyAgentRss = agentPid ? new PeakRss(agentPids) : undefined;
  const manyAgentAnon = agentPid ? new PeakRss(agentPids, "RssAnon") : undefined;
  const cgroup = agentCgroup?.();
  let cgroupPeak = 0;
  const cgroupTimer = setInterval(() => {
    cgroupPeak = Math.max(cgroupPeak, cgroup?.stats()?.usage ?? 0);
  }, 100);
  let many!: Awaited<ReturnType<typeof manyConnections>>;
  r.concurrentCpuS = await cpuDuring(async () => {
    many = await manyConnections(host, port, SIZES.concurrent, SIZES.perConn);
  });
  clearInterval(cgroupTimer);
  r.concurrentWallS = many.wallS;
  r.concurrentErrors = many.errors;
  r.clientConcurrentPeakRssMiB = manyRss.stop();
  r.agentConcurrentPeakRssMiB = manyAgentRss?.stop();
  r.agentConcurrentPeakAnonMiB = manyAgentAnon?.stop();
  const cg = cgroup?.stats();
  if (cg) {
    r.agentConcurrentCgroupPeakMiB = Math.max(cgroupPeak, cg.usage) / 2 ** 20;
    if (cg.peak !== undefined) r.agentCgroupPeakMiB = cg.peak / 2 ** 20;
    if (cg.limit !== undefined) r.agentCgroupLimitMiB = cg.limit / 2 ** 20;
  }
  if (dnsPort !== undefined) {
    progress(name, `DNS over UDP (${SIZES.dnsQueries} queries)…`);
    const dns = await dnsQueryLoop(host, dnsPort, SIZES.dnsQueries);
    r.dnsQps = dns.qps;
    r.dnsLossPct = dns.lossPct;
  }
  r.clientPeakRssMiB = rss.stop();
  if (agentRss) r.agentPeakRssMiB = agentRss.stop();
  progress(name, `${SIZES.echoSamples} 1-byte echoes on one connection, idle…`);
  const idle = await echoIdle(host, port, SIZES.echoSamples);
  r.echoIdleP50Ms = idle.p50;
  r.echoIdleP99Ms = idle.p99;
  r.echoIdleMaxMs = idle.max;
  r.echoIdleSamples = idle.samples;
  progress(
    name,
    `≥ ${SIZES.echoSamples} 1-byte echoes while another connection echoes ≥ ${
      SIZES.bytes >> 20
    } MiB…`,
  );
  const loaded = await echoUnderLoad(
    host,
    port,
    SIZES.bytes,
    SIZES.echoSamples,
    SIZES.loadTimeoutMs,
  );
  r.echoLoadedP50Ms = loaded.p50;
  r.echoLoadedP99Ms = loaded.p99;
  r.echoLoadedMaxMs = loaded.max;
  r.echoLoadedSamples = loaded.samples;
  r.loadBulkMiB = loaded.bulkBytes / (1 << 20);
  r.loadBulkMiBs = loaded.bulkMiBs;
  return r;
}

/** Time to first byte over `SIZES.firstByteRuns` spawns of `start`, into `r`. */
async function measureFirstByte(
  r: PathResult,
  start: () => Promise<StartedForward>,
  phases?: typeof relayPhases,
  settle?: () => Promise<void>,
): Promise<void> {
  progress(r.path, `time to first byte (${SIZES.firstByteRuns} spawns)…`);
  const runs: FirstByteRun[] = [];
  for (let i = 0; i < SIZES.firstByteRuns; i++) {
    runs.push(await firstByte(start, phases));
    await settle?.();
  }
  r.firstByteRunsS = runs.map((x) => x.totalMs / 1000);
  r.firstByteMedianS = median(r.firstByteRunsS);
  const withPhases = runs.flatMap((x) => x.phases ? [x.phases] : []);
  if (withPhases.length) {
    r.firstBytePhaseRunsMs = withPhases;
    r.firstBytePhasesMs = Object.fromEntries(
      RELAY_PHASES.map((p) => [p, median(withPhases.map((x) => x[p]))]),
    );
  }
}

/**
 * Warm start: one `--reuse-agent` relay starts an agent and stops (the agent stays, waiting for
 * its idle exit), then each run is a new `--reuse-agent` relay that finds and uses it.
 */
async function measureWarmStart(r: PathResult, kc: string): Promise<void> {
  progress(r.path, `time to first byte with a running agent (${SIZES.firstByteRuns} spawns)…`);
  const args = ["--reuse-agent", "-n", NS, "pod/echo", `:${ECHO_PORT}`];
  const start = async (): Promise<StartedForward> => {
    const p = await startRelay(kc, args, { forwardLines: 1 });
    return {
      port: p.ports[0],
      stderr: () => p.err,
      stop: async () => {
        await p.stop("SIGINT");
      },
    };
  };
  await (await start()).stop();
  const runs: number[] = [];
  for (let i = 0; i < SIZES.firstByteRuns; i++) runs.push((await firstByte(start)).totalMs / 1000);
  r.firstByteWarmRunsS = runs;
  r.firstByteWarmMedianS = median(runs);
}

/**
 * `--direct` (no agent: each connection is its own apiserver port-forward to the pod, as kubectl
 * port-forward's are streams of one): new-connection latency.
 */
async function measureDirectMode(r: PathResult, kc: string): Promise<void> {
  progress(r.path, `--direct: ${SIZES.conns} sequential connections…`);
  const p = await startRelay(kc, ["--direct", "-n", NS, "pod/echo", `:${ECHO_PORT}`], {
    forwardLines: 1,
  });
  try {
    const lat = await latency("127.0.0.1", p.ports[0], SIZES.conns);
    r.directModeLatencyP50Ms = lat.p50;
    r.directModeLatencyP99Ms = lat.p99;
  } finally {
    await p.stop("SIGINT");
  }
}

/** Waits (bounded) until no agent process of the harness is left, so runs do not overlap. */
async function agentsGone(clusterDir: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    let left = 0;
    try {
      for (const e of Deno.readDirSync(`${clusterDir}/agents`)) if (e.name.endsWith(".pid")) left++;
    } catch {
      // no agents directory yet
    }
    if (left === 0) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The cluster's processes whose CPU time is recorded beside the client's, by name. */
let clusterPids: Record<string, number> = {};

const started = performance.now();

/** A progress line on stderr, with the seconds since the start. */
function progress(path: string, what: string): void {
  console.error(`[${((performance.now() - started) / 1000).toFixed(0)} s] [${path}] ${what}`);
}

function fmt(n: number | undefined, digits = 1): string {
  return n === undefined ? "—" : n.toFixed(digits);
}

function ratio(a: number | undefined, b: number | undefined): string {
  return a === undefined || b === undefined || b === 0 ? "—" : `${(a / b).toFixed(2)}×`;
}

function table(results: PathResult[]): string {
  const [direct, kpf, relay] = results;
  const loadedOverIdle = (r: PathResult) =>
    r.echoLoadedP99Ms === undefined || !r.echoIdleP99Ms
      ? undefined
      : r.echoLoadedP99Ms / r.echoIdleP99Ms;
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
    [`client peak RSS at ${SIZES.concurrent} conns (MiB)`, (r) => r.clientConcurrentPeakRssMiB, 0],
    [`agent peak RSS at ${SIZES.concurrent} conns (MiB)`, (r) => r.agentConcurrentPeakRssMiB, 0],
    [
      `agent peak anonymous RSS at ${SIZES.concurrent} conns (MiB)`,
      (r) => r.agentConcurrentPeakAnonMiB,
      0,
    ],
    [
      `agent cgroup peak at ${SIZES.concurrent} conns (MiB)`,
      (r) => r.agentConcurrentCgroupPeakMiB,
      0,
    ],
    ["agent cgroup peak, whole life so far (MiB)", (r) => r.agentCgroupPeakMiB, 0],
    ["agent memory limit (MiB)", (r) => r.agentCgroupLimitMiB, 0],
    [`client CPU s at ${SIZES.concurrent} conns`, (r) => r.concurrentCpuS?.client, 2],
    [`agent CPU s at ${SIZES.concurrent} conns`, (r) => r.concurrentCpuS?.agent, 2],
    [
      `kube-apiserver CPU s at ${SIZES.concurrent} conns`,
      (r) => r.concurrentCpuS?.["kube-apiserver"],
      2,
    ],
    [`kwok (node) CPU s at ${SIZES.concurrent} conns`, (r) => r.concurrentCpuS?.kwok, 2],
    ["client CPU s per GiB echoed", (r) => r.clientCpuSPerGiB, 2],
    ["agent CPU s per GiB echoed", (r) => r.agentCpuSPerGiB, 2],
    ["kube-apiserver CPU s per GiB echoed", (r) => r.clusterCpuSPerGiB?.["kube-apiserver"], 2],
    ["kwok (node) CPU s per GiB echoed", (r) => r.clusterCpuSPerGiB?.kwok, 2],
    ["1-byte echo, idle p50 (ms)", (r) => r.echoIdleP50Ms, 2],
    ["1-byte echo, idle p99 (ms)", (r) => r.echoIdleP99Ms, 2],
    ["1-byte echo, idle max (ms)", (r) => r.echoIdleMaxMs, 2],
    ["1-byte echo under load p50 (ms)", (r) => r.echoLoadedP50Ms, 2],
    ["1-byte echo under load p99 (ms)", (r) => r.echoLoadedP99Ms, 2],
    ["1-byte echo under load max (ms)", (r) => r.echoLoadedMaxMs, 2],
    ["echo under load, samples", (r) => r.echoLoadedSamples, 0],
    ["under load p99 / idle p99", loadedOverIdle, 1],
    ["bulk beside the echo (MiB)", (r) => r.loadBulkMiB, 0],
    ["bulk beside the echo (MiB/s)", (r) => r.loadBulkMiBs, 0],
    [`time to first byte, median of ${SIZES.firstByteRuns} (s)`, (r) => r.firstByteMedianS, 2],
    [
      `time to first byte, slowest of ${SIZES.firstByteRuns} (s)`,
      (r) => r.firstByteRunsS && Math.max(...r.firstByteRunsS),
      2,
    ],
    [
      `warm start (relay: agent reused; kubectl: as above), median of ${SIZES.firstByteRuns} (s)`,
      (r) => r.firstByteWarmMedianS ?? r.firstByteMedianS,
      2,
    ],
    [
      "new connection p50 (ms), relay with --direct",
      (r) => r.directModeLatencyP50Ms ?? r.latencyP50Ms,
      2,
    ],
    [
      "new connection p99 (ms), relay with --direct",
      (r) => r.directModeLatencyP99Ms ?? r.latencyP99Ms,
      2,
    ],
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

/** The relay's startup breakdown: median milliseconds per phase over the runs, and the range. */
function phaseTable(r: PathResult): string {
  const runs = r.firstBytePhaseRunsMs;
  if (!runs?.length || !r.firstBytePhasesMs) return "";
  const head =
    `| relay startup phase (${runs.length} runs) | median (ms) | min–max (ms) |\n|---|---|---|`;
  const lines = RELAY_PHASES.map((p) => {
    const xs = runs.map((x) => x[p]);
    return `| ${p} | ${r.firstBytePhasesMs![p].toFixed(0)} | ${Math.min(...xs).toFixed(0)}–${
      Math.max(...xs).toFixed(0)
    } |`;
  });
  return [head, ...lines].join("\n");
}

/** The 1-, 5- and 15-minute load averages (other work on the machine makes numbers noisy). */
function loadAvg(): string {
  try {
    return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
  } catch {
    return "?";
  }
}

async function main(): Promise<void> {
  const t0 = performance.now();
  const loadBefore = loadAvg();
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

    const state = JSON.parse(await Deno.readTextFile(`${cluster.dir}/state.json`)) as {
      procs: { spec: { name: string }; pid: number }[];
    };
    clusterPids = Object.fromEntries(
      state.procs.filter((p) => ["kube-apiserver", "kwok", "runtime"].includes(p.spec.name))
        .map((p) => [p.spec.name, p.pid]),
    );
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
    await measureFirstByte(results[1], async () => {
      const f = await kubectlPortForward(kc, "echo", ECHO_PORT);
      return {
        port: f.port,
        stderr: () => [],
        stop: async () => {
          f.child.kill("SIGINT");
          await f.child.status;
        },
      };
    });

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
    const controller = detectMemoryController();
    const agentCgroup = () => {
      try {
        const dir = Deno.readTextFileSync(`${cluster.dir}/agents/default_${agentPod}.cgroup`);
        return controller ? new PodCgroup(controller, dir.trim()) : undefined;
      } catch {
        return undefined; // no cgroup file: the harness does not enforce memory limits
      }
    };
    results.push(
      await measurePath(
        "kubectl relay",
        "127.0.0.1",
        relay.ports[0],
        relay.ports[1],
        () => [relayPid],
        agentPid,
        agentCgroup,
      ),
    );

    await relay.stop("SIGINT");
    relay = undefined;
    await agentsGone(cluster.dir);
    await measureFirstByte(
      results[2],
      async () => {
        const p = await startRelay(kc, ["-v=1", "-n", NS, "pod/echo", `:${ECHO_PORT}`], {
          forwardLines: 1,
        });
        return {
          port: p.ports[0],
          stderr: () => p.err,
          stop: async () => {
            await p.stop("SIGINT");
          },
        };
      },
      relayPhases,
      () => agentsGone(cluster.dir),
    );
    await measureWarmStart(results[2], kc);
    await measureDirectMode(results[2], kc);

    const text = [table(results), phaseTable(results[2])].join("\n\n");
    console.log(
      `\nkubectl-relay benchmark (${quick ? "quick" : "full"}), ${
        new Date().toISOString()
      }, ${Deno.build.target}, ${navigator.hardwareConcurrency} cores, load average ${loadBefore} before, ${loadAvg()} after\n`,
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
          machine: {
            target: Deno.build.target,
            cores: navigator.hardwareConcurrency,
            loadAvgBefore: loadBefore,
            loadAvgAfter: loadAvg(),
          },
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
