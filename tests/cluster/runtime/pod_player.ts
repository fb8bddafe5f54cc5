/**
 * Plays one pod's containers: the relay agent as a local `deno run agent.ts` process (in a
 * private mount namespace whose /etc/resolv.conf points at the cluster DNS; its output kept as a
 * CRI log file that kwok serves through the pod log API), or, for other pods, real servers bound
 * to the pod IP (HTTP, test-zone DNS, redis-server). Then it publishes a kwok `PortForward` for
 * the pod, runs the agent container's tcpSocket readiness probe, and marks the pod Ready.
 *
 * @module
 */

import type { AgentSandbox } from "./agent_sandbox.ts";
import { type ManagedChild, spawnChild } from "./child.ts";
import { type DnsServer, startDnsServer } from "./dns_server.ts";
import { type EchoServer, startTcpEcho, startUdpEcho } from "./echo_server.ts";
import {
  agentArgs,
  type AgentPlan,
  isAgentPod,
  type PlannedServer,
  portPlan,
  type V1Pod,
} from "./kube.ts";
import { type PodHttpServer, startPodHttpServer } from "./pod_http.ts";
import { testZoneAnswerer } from "./zones.ts";
import { CLUSTER_DOMAIN } from "./zones.ts";

/** What a player needs from the runtime (the API calls are injectable for tests). */
export interface PlayerEnv {
  /** `deno run -A <agentPath>` for agent pods. */
  agentPath: string;
  /** Runtime state dir (agent pid files and logs go under it). */
  stateDir: string;
  /** Cluster DNS server address for the agents' resolv.conf. */
  dnsServer: string;
  /** Wrap the agent in `unshare` + bind-mounted resolv.conf (default true; needs root). */
  privateResolv?: boolean;
  /**
   * Enforce what a kubelet enforces on the agent (memory cgroup, securityContext identity, OOM
   * reporting). The runtime always sets it; without it the agent runs as we do, unlimited.
   */
  agentSandbox?: AgentSandbox;
  log: (line: string) => void;
  /** Publish forwards for these pod ports (kwok PortForward). */
  publishPorts(pod: V1Pod, ports: number[]): Promise<void>;
  /** Resolve once the port-forward to `port` really works (kwok saw the PortForward). */
  confirmPublished?(pod: V1Pod, port: number, cancelled: () => boolean): Promise<void>;
  /** Remove the pod's PortForward (ignore not-found). */
  unpublish(namespace: string, name: string): Promise<void>;
  /**
   * Serve `file` (CRI log format) as the log of `container` through the pod log API (kwok
   * `Logs`, owned by the pod, so it goes with it); resolves once kwok serves it.
   */
  publishLogs?(pod: V1Pod, container: string, file: string): Promise<void>;
  /** Mark the pod's containers ready (status subresource). */
  markReady(pod: V1Pod): Promise<void>;
  /** Mark the pod finished (agent exited by itself); `reason` e.g. `OOMKilled`. */
  markFinished(pod: V1Pod, exitCode: number, reason?: string): Promise<void>;
}

type Closer = () => Promise<void>;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Retry `fn` while it fails with AddrInUse (a reused pod IP whose old server is stopping). */
async function bindRetry<T>(fn: () => Promise<T>): Promise<T> {
  for (let i = 0;; i++) {
    try {
      return await fn();
    } catch (e) {
      if (!(e instanceof Deno.errors.AddrInUse) || i >= 50) throw e;
      await sleep(100);
    }
  }
}

async function waitTcp(hostname: string, port: number, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      const c = await Deno.connect({ hostname, port });
      c.close();
      return;
    } catch (e) {
      if (Date.now() > end) throw new Error(`${hostname}:${port} not listening: ${e}`);
      await sleep(50);
    }
  }
}

/** resolv.conf text for pods of namespace `ns`. */
export function resolvConf(ns: string, nameserver: string): string {
  return [
    `nameserver ${nameserver}`,
    `search ${ns}.svc.${CLUSTER_DOMAIN} svc.${CLUSTER_DOMAIN} ${CLUSTER_DOMAIN}`,
    "options ndots:5",
    "",
  ].join("\n");
}

/** One line of a CRI container log file: `<RFC 3339 time> <stream> F <line>`. */
export function criLogLine(stream: "stdout" | "stderr", line: string, now = new Date()): string {
  return `${now.toISOString()} ${stream} F ${line}\n`;
}

/** The port a tcpSocket probe names (a number, or a container port's name), if any. */
function probePort(
  container: NonNullable<V1Pod["spec"]>["containers"][number] | undefined,
): number | undefined {
  const p = container?.readinessProbe?.tcpSocket?.port;
  if (p === undefined) return undefined;
  if (typeof p === "number") return p;
  if (/^\d+$/.test(p)) return Number(p);
  return container?.ports?.find((cp) => cp.name === p)?.containerPort;
}

/** Plays one pod (one uid). start() once, stop() once. */
export class PodPlayer {
  readonly uid: string;
  readonly namespace: string;
  readonly name: string;
  readonly ip: string;
  #closers: Closer[] = [];
  #agent?: ManagedChild;
  #stopped = false;
  #stopping?: Promise<void>;
  #pidFile?: string;
  #plan?: AgentPlan;

  constructor(readonly pod: V1Pod, readonly env: PlayerEnv) {
    this.uid = pod.metadata?.uid ?? "";
    this.namespace = pod.metadata!.namespace!;
    this.name = pod.metadata!.name!;
    this.ip = pod.status!.podIP!;
  }

  get key(): string {
    return `${this.namespace}/${this.name}`;
  }

  /** Agent process id (agent pods only, while it runs). */
  get agentPid(): number | undefined {
    return this.#agent?.pid;
  }

  /** Start the containers, publish the port-forward, mark Ready. Throws on failure. */
  async start(): Promise<void> {
    const ports = this.pod.spec?.hostNetwork
      ? [] // shares the node's address: nothing of ours to run
      : isAgentPod(this.pod)
      ? await this.#startAgent()
      : await this.#startServers();
    if (this.#stopped) return;
    await this.env.publishPorts(this.pod, ports);
    this.#own(() => this.env.unpublish(this.namespace, this.name));
    if (ports.length && this.env.confirmPublished) {
      // An agent's health port comes first: probing through kwok must not open an (empty)
      // connection to its tunnel port.
      await this.env.confirmPublished(this.pod, ports[0], () => this.#stopped);
    }
    if (this.#stopped) return;
    if (this.#plan && !(await this.#readinessProbe(this.#plan))) return;
    await this.env.markReady(this.pod);
    this.env.log(`pod ${this.key} (${this.ip}) ready, ports ${ports.join(",") || "none"}`);
  }

  /** Register a cleanup; if stop() already ran, clean up at once (a start racing a stop). */
  #own(closer: Closer): void {
    if (!this.#stopped) {
      this.#closers.push(closer);
      return;
    }
    closer().catch((e) => this.env.log(`pod ${this.key}: stop: ${e}`));
  }

  /** Stop everything (idempotent; concurrent callers share one stop). */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      this.#stopped = true;
      const closers = this.#closers.reverse();
      this.#closers = [];
      for (const c of closers) {
        await c().catch((e) => this.env.log(`pod ${this.key}: stop: ${e}`));
      }
      this.env.log(`pod ${this.key} stopped`);
    })();
    return this.#stopping;
  }

  async #startServers(): Promise<number[]> {
    const plan = portPlan(this.pod);
    const ports = new Set<number>();
    for (const s of plan) {
      if (this.#stopped) break;
      await this.#startServer(s);
      ports.add(s.port);
    }
    return [...ports];
  }

  async #startServer(s: PlannedServer): Promise<void> {
    const where = `${this.ip}:${s.port}/${s.protocol}`;
    if (s.role === "echo") {
      const srv: EchoServer = await bindRetry(() =>
        s.protocol === "TCP" ? startTcpEcho(this.ip, s.port) : startUdpEcho(this.ip, s.port)
      );
      this.#own(() => srv.close());
    } else if (s.role === "http") {
      const srv: PodHttpServer = await bindRetry(() =>
        startPodHttpServer(this.ip, s.port, this.name)
      );
      this.#own(() => srv.close());
    } else if (s.role === "dns") {
      const srv: DnsServer = await bindRetry(() =>
        startDnsServer({
          hostname: this.ip,
          port: s.port,
          udp: s.protocol === "UDP",
          tcp: s.protocol === "TCP",
          answer: testZoneAnswerer(this.name),
        })
      );
      this.#own(() => srv.close());
    } else {
      const dir = `${this.env.stateDir}/redis/${this.namespace}_${this.name}_${s.port}`;
      await Deno.mkdir(dir, { recursive: true });
      const child = await spawnChild("redis-server", {
        args: [
          "--bind",
          this.ip,
          "--port",
          String(s.port),
          "--save",
          "",
          "--appendonly",
          "no",
          "--protected-mode",
          "no",
          "--daemonize",
          "no",
          "--dir",
          dir,
        ],
        logFile: `${dir}/redis.log`,
      });
      this.#own(async () => {
        await child.stop();
        await Deno.remove(dir, { recursive: true }).catch(() => {});
      });
      await Promise.race([
        waitTcp(this.ip, s.port, 10000),
        child.status.then((st) => {
          throw new Error(`redis-server exited with ${st.code} (see ${dir}/redis.log)`);
        }),
      ]);
    }
    this.env.log(`pod ${this.key}: ${s.role} on ${where}`);
  }

  /**
   * The agent container's tcpSocket readiness probe, as a kubelet runs it: a TCP connect to the
   * pod IP, repeated until it succeeds (true) or the pod stops (false). A probe aimed at a port the
   * container binds to loopback only never succeeds, as on a kubelet. No probe: ready at once.
   */
  async #readinessProbe(plan: AgentPlan): Promise<boolean> {
    const port = probePort(this.pod.spec?.containers?.[0]);
    if (port === undefined) return true;
    if (plan.loopbackPorts.includes(port)) {
      this.env.log(
        `pod ${this.key}: readiness probe on port ${port} fails: the agent listens there on the pod's loopback only; never Ready`,
      );
    }
    for (;;) {
      if (this.#stopped) return false;
      if (!plan.loopbackPorts.includes(port)) {
        try {
          (await Deno.connect({ hostname: this.ip, port })).close();
          return true;
        } catch {
          // not yet
        }
      }
      await sleep(100);
    }
  }

  /** Starts the agent; returns the ports to publish, the health port (if any) first. */
  async #startAgent(): Promise<number[]> {
    const container = this.pod.spec?.containers?.[0];
    const plan = agentArgs(container?.args, this.ip);
    this.#plan = plan;
    const { args, port } = plan;
    const dir = `${this.env.stateDir}/agents`;
    await Deno.mkdir(dir, { recursive: true });
    const base = `${dir}/${this.namespace}_${this.name}`;
    const deno = Deno.execPath();
    const denoArgs = ["run", "-A", "--unstable-net", this.env.agentPath, ...args];
    // Memory cgroup + securityContext identity (see agent_sandbox.ts); released after the stop.
    const launch = await this.env.agentSandbox?.prepare(this.pod, container, base);
    if (launch) this.#own(async () => void await launch.release());
    const argv = launch ? launch.wrap([deno, ...denoArgs]) : [deno, ...denoArgs];
    let cmd = argv[0];
    let cmdArgs = argv.slice(1);
    if (this.env.privateResolv ?? true) {
      const resolv = `${base}.resolv.conf`;
      await Deno.writeTextFile(resolv, resolvConf(this.namespace, this.env.dnsServer));
      cmd = "unshare";
      cmdArgs = [
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        'mount --bind "$0" /etc/resolv.conf && exec "$@"',
        resolv,
        ...argv,
      ];
    }
    // The container's log, as the pod log API serves it. Kept after the pod stops (a kubelet
    // keeps a finished container's log until the pod goes; kwok's Logs object goes with the pod).
    const cri = await Deno.open(`${base}.cri.log`, { create: true, write: true, truncate: true });
    await this.env.publishLogs?.(this.pod, container?.name ?? "agent", `${base}.cri.log`).catch(
      (e) => this.env.log(`pod ${this.key}: publish logs: ${e}`),
    );
    const enc = new TextEncoder();
    let ready!: () => void;
    const listening = new Promise<void>((r) => ready = r);
    let child: ManagedChild;
    try {
      child = await spawnChild(cmd, {
        args: cmdArgs,
        logFile: `${base}.log`,
        env: launch?.env ?? { NO_COLOR: "1" },
        clearEnv: launch !== undefined,
        onLine: (line, stream) => {
          this.env.log(`agent ${this.key}: ${line}`);
          try {
            cri.writeSync(enc.encode(criLogLine(stream, line)));
          } catch {
            // closed after the exit
          }
          if (/listening on /.test(line)) ready();
        },
      });
    } catch (e) {
      cri.close();
      throw e;
    }
    child.status.finally(() => cri.close());
    this.#agent = child;
    this.#pidFile = `${base}.pid`;
    await Deno.writeTextFile(this.#pidFile, `${child.pid}\n`);
    this.#own(async () => {
      await child.stop();
      await Deno.remove(this.#pidFile!).catch(() => {});
      await Deno.remove(`${base}.resolv.conf`).catch(() => {});
    });
    this.env.log(`pod ${this.key}: agent pid ${child.pid}: ${cmd} ${cmdArgs.join(" ")}`);
    // When the agent exits by itself, the pod's container terminated: report it.
    child.status.then(async (st) => {
      if (child.stopping || this.#stopped) return;
      const end = launch ? await launch.exited(st) : { exitCode: st.code, reason: undefined };
      this.env.log(
        `agent ${this.key} exited with code ${end.exitCode}${end.reason ? ` (${end.reason})` : ""}`,
      );
      await Deno.remove(this.#pidFile!).catch(() => {});
      await this.env.unpublish(this.namespace, this.name).catch(() => {});
      await this.env.markFinished(this.pod, end.exitCode, end.reason).catch((e) =>
        this.env.log(`pod ${this.key}: mark finished: ${e}`)
      );
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([
        listening,
        child.status.then((st) => {
          throw new Error(`agent exited with code ${st.code} before listening (see ${base}.log)`);
        }),
        new Promise((_, rej) =>
          timer = setTimeout(() => rej(new Error("agent not listening after 60 s")), 60000)
        ),
      ]);
    } finally {
      clearTimeout(timer);
    }
    return plan.healthPort !== undefined ? [plan.healthPort, port] : [port];
  }
}
