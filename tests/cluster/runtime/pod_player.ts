/**
 * Plays one pod's containers: the relay agent as a local `deno run agent.ts` process (in a
 * private mount namespace whose /etc/resolv.conf points at the cluster DNS; its output kept as a
 * CRI log file that kwok serves through the pod log API), or, for other pods, real servers bound
 * to the pod IP (HTTP, test-zone DNS, redis-server). Then it publishes a kwok `PortForward` for
 * the pod, runs the agent container's tcpSocket readiness probe, and marks the pod Ready.
 *
 * A deleted pod ends as a kubelet ends it ({@link PodPlayer.terminate}): the preStop sleep (the
 * servers serve as before), then SIGTERM — our servers stop accepting (listeners released, UDP
 * sockets closed) and finish their open TCP connections; processes get SIGTERM — then SIGKILL
 * (connections closed) when the grace period is over.
 *
 * @module
 */

import type { AgentSandbox } from "./agent_sandbox.ts";
import { type ManagedChild, spawnChild } from "./child.ts";
import { type DnsAnswerer, type DnsServer, startDnsServer } from "./dns_server.ts";
import { type EchoServer, startTcpEcho, startUdpEcho } from "./echo_server.ts";
import {
  agentArgs,
  type AgentPlan,
  isAgentPod,
  type PlannedServer,
  portPlan,
  type Termination,
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
  /** Cluster DNS server address (the kube-dns Service IP) for the agents' resolv.conf. */
  dnsServer: string;
  /** What the cluster DNS answers: played by pods whose image contains "coredns". */
  clusterAnswer?: DnsAnswerer;
  /** Wrap the agent in `unshare` + bind-mounted resolv.conf (default true; needs root). */
  privateResolv?: boolean;
  /**
   * Enforce what a kubelet enforces on the agent (memory cgroup, securityContext identity, OOM
   * reporting). The runtime always sets it; without it the agent runs as we do, unlimited.
   */
  agentSandbox?: AgentSandbox;
  log: (line: string) => void;
  /**
   * Publish forwards for these pod ports (kwok PortForward), to podIP:port, or to the address in
   * `targets` for a port served on the pod's localhost only.
   */
  publishPorts(pod: V1Pod, ports: number[], targets?: ReadonlyMap<number, HostPort>): Promise<void>;
  /** Resolve once the port-forward to `port` really works (kwok saw the PortForward). */
  confirmPublished?(pod: V1Pod, port: number, cancelled: () => boolean): Promise<boolean>;
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

/** Where a port-forward goes. */
export interface HostPort {
  hostname: string;
  port: number;
}

/** Where the servers of `local-*` ports listen: the pod's "localhost" (a random port there). */
const POD_LOCALHOST = "127.0.0.1";

/** kubelet's `minimumGracePeriodInSeconds`: SIGTERM always gets at least this before SIGKILL. */
export const MIN_GRACE_AFTER_PRESTOP_MS = 2000;

/** Something the pod runs (a server or a process), ended as a kubelet ends a container. */
interface Running {
  what: string;
  /** SIGTERM: stop accepting / signal the process. */
  term(): void;
  /** Resolves with the exit code once it has ended by itself (after term()). */
  readonly exited: Promise<number>;
  /** SIGKILL: end now (open connections closed); resolves when it is gone. */
  kill(): Promise<void>;
}

/** A graceful in-process server: on SIGTERM it stops accepting and exits once drained. */
function gracefulServer(
  what: string,
  srv: { stopAccepting(): Promise<void>; drained(): Promise<void>; close(): Promise<void> },
): Running {
  let termed!: () => void;
  const term = new Promise<void>((r) => termed = r);
  return {
    what,
    term: () => termed(),
    exited: term.then(() => srv.stopAccepting()).then(() => srv.drained()).then(async () => {
      await srv.close();
      return 0;
    }),
    kill: () => srv.close(),
  };
}

/**
 * A server with CoreDNS's lameduck: after SIGTERM it keeps serving everything (accepting
 * included) for `lameduckMs`, then exits (its open connections closed).
 */
function lameduckServer(
  what: string,
  srv: { close(): Promise<void> },
  lameduckMs: number,
): Running {
  let termed!: () => void;
  const term = new Promise<void>((r) => termed = r);
  return {
    what,
    term: () => termed(),
    exited: term.then(() => new Promise((r) => setTimeout(r, lameduckMs))).then(async () => {
      await srv.close();
      return 0;
    }),
    kill: () => srv.close(),
  };
}

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

/** A process: SIGTERM (+SIGCONT), exit code from its status, SIGKILL. */
function processRunning(what: string, child: ManagedChild): Running {
  return {
    what,
    // stop() sends SIGTERM; its own SIGKILL timer is superseded by kill() (stop(0)).
    term: () => void child.stop(24 * 3600_000),
    exited: child.status.then((st) => st.code),
    kill: async () => {
      await child.stop(0);
    },
  };
}

/**
 * resolv.conf for pods of namespace `ns` with dnsPolicy ClusterFirst, as a kubelet writes it
 * (search list, the cluster DNS Service IP, ndots:5).
 */
export function resolvConf(ns: string, nameserver: string): string {
  return [
    `search ${ns}.svc.${CLUSTER_DOMAIN} svc.${CLUSTER_DOMAIN} ${CLUSTER_DOMAIN}`,
    `nameserver ${nameserver}`,
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
  #running: Running[] = [];
  #agent?: ManagedChild;
  /** Set once stop() or terminate() began: start() gives up, late servers are killed. */
  #stopped = false;
  #killNow?: () => void;
  #killed = new Promise<void>((r) => this.#killNow = r);
  #ending?: Promise<number>;
  #pidFile?: string;
  /** Ports served on the pod's localhost only: pod port → where its server really listens. */
  #localTargets = new Map<number, HostPort>();
  #plan?: AgentPlan;
  #agentEnded = false;

  constructor(readonly pod: V1Pod, readonly env: PlayerEnv) {
    this.uid = pod.metadata?.uid ?? "";
    this.namespace = pod.metadata!.namespace!;
    this.name = pod.metadata!.name!;
    this.ip = pod.status!.podIP!;
  }

  get key(): string {
    return `${this.namespace}/${this.name}`;
  }

  /**
   * True once the agent exited by itself: its container has terminated, and with
   * `restartPolicy: Never` (agent Jobs) it must never run again for this pod.
   */
  get agentEnded(): boolean {
    return this.#agentEnded;
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
    await this.env.publishPorts(this.pod, ports, this.#localTargets);
    this.#own(() => this.env.unpublish(this.namespace, this.name));
    if (ports.length && this.env.confirmPublished) {
      // An agent's health port comes first: probing through kwok must not open an (empty)
      // connection to its tunnel port.
      const stopped = () => this.#stopped;
      if (!(await this.env.confirmPublished(this.pod, ports[0], stopped)) && !this.#stopped) {
        // kwok's informer can miss a PortForward (seen on a loaded machine): create it once more.
        this.env.log(`pod ${this.key}: publishing its PortForward again`);
        await this.env.unpublish(this.namespace, this.name);
        await this.env.publishPorts(this.pod, ports, this.#localTargets);
        await this.env.confirmPublished(this.pod, ports[0], stopped);
      }
    }
    if (this.#stopped) return;
    if (this.#plan && !(await this.#readinessProbe(this.#plan))) return;
    await this.env.markReady(this.pod);
    this.env.log(`pod ${this.key} (${this.ip}) ready, ports ${ports.join(",") || "none"}`);
  }

  /** Register a cleanup; if the pod is already ending, clean up at once (a start racing a stop). */
  #own(closer: Closer): void {
    if (!this.#stopped) {
      this.#closers.push(closer);
      return;
    }
    closer().catch((e) => this.env.log(`pod ${this.key}: stop: ${e}`));
  }

  /** Register something the pod runs; killed at once if the pod is already ending. */
  #run(r: Running): void {
    if (!this.#stopped) {
      this.#running.push(r);
      return;
    }
    r.term();
    r.kill().catch((e) => this.env.log(`pod ${this.key}: stop ${r.what}: ${e}`));
  }

  /** Kill everything now (idempotent): runtime shutdown, or the pod object vanished. */
  async stop(): Promise<void> {
    this.#killNow!();
    await this.#end({ graceMs: 0, preStopMs: 0 });
  }

  /**
   * End the pod as a kubelet ends a deleted one: preStop sleep, SIGTERM, SIGKILL at the end of
   * the grace period (at least {@link MIN_GRACE_AFTER_PRESTOP_MS} after SIGTERM). Resolves with
   * the exit code: 0 if everything ended by itself, else that of a process, 137 if killed.
   * Idempotent; stop() cuts it short.
   */
  terminate(t: Termination): Promise<number> {
    return this.#end(t);
  }

  #end(t: Termination): Promise<number> {
    this.#ending ??= (async () => {
      this.#stopped = true;
      const t0 = Date.now();
      const killed = this.#killed.then(() => "killed" as const);
      const wait = async (ms: number) => {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const r = await Promise.race([
          killed,
          new Promise<"time">((res) => timer = setTimeout(() => res("time"), ms)),
        ]);
        clearTimeout(timer);
        return r;
      };
      if (t.preStopMs > 0) await wait(Math.min(t.preStopMs, t.graceMs));
      const left = Math.max(t.graceMs - (Date.now() - t0), MIN_GRACE_AFTER_PRESTOP_MS);
      const running = this.#running;
      this.#running = [];
      for (const r of running) r.term();
      // Exit codes: set by whichever comes first, the process's own exit or our SIGKILL.
      const codes: (number | undefined)[] = running.map(() => undefined);
      const exited = Promise.all(running.map((r, i) =>
        r.exited.then((c) => {
          codes[i] ??= c;
        }, () => {
          codes[i] ??= 1;
        })
      ));
      const outcome = t.graceMs > 0
        ? await Promise.race([exited.then(() => "exited" as const), wait(left)])
        : "killed";
      if (outcome !== "exited") {
        await Promise.all(running.map(async (r, i) => {
          if (codes[i] !== undefined) return;
          codes[i] = 137;
          await r.kill().catch((e) => this.env.log(`pod ${this.key}: kill ${r.what}: ${e}`));
        }));
      }
      const closers = this.#closers.reverse();
      this.#closers = [];
      for (const c of closers) {
        await c().catch((e) => this.env.log(`pod ${this.key}: stop: ${e}`));
      }
      const code = codes.find((c) => c !== 0) ?? 0;
      this.env.log(`pod ${this.key} stopped (exit code ${code}, ${Date.now() - t0} ms)`);
      return code;
    })();
    return this.#ending;
  }

  /** How a server of this pod stops: CoreDNS's lameduck, else a graceful server's way. */
  #stopping(what: string, srv: EchoServer | DnsServer, s: PlannedServer): Running {
    return s.lameduckMs > 0 ? lameduckServer(what, srv, s.lameduckMs) : gracefulServer(what, srv);
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
    const local = s.local && s.role !== "redis";
    const host = local ? POD_LOCALHOST : this.ip;
    const port = local ? 0 : s.port;
    let where = `${this.ip}:${s.port}/${s.protocol}`;
    const bound = (actual: number) => {
      if (!local) return;
      this.#localTargets.set(s.port, { hostname: host, port: actual });
      where = `localhost:${s.port}/${s.protocol} (played on ${host}:${actual})`;
    };
    if (s.role === "echo") {
      const srv: EchoServer = await bindRetry(() =>
        s.protocol === "TCP" ? startTcpEcho(host, port) : startUdpEcho(host, port)
      );
      bound(srv.port);
      this.#run(this.#stopping(`echo ${where}`, srv, s));
    } else if (s.role === "http") {
      const srv: PodHttpServer = await bindRetry(() => startPodHttpServer(host, port, this.name));
      bound(srv.port);
      this.#run(this.#stopping(`http ${where}`, srv, s));
    } else if (s.role === "dns" || s.role === "cluster-dns") {
      const answer = s.role === "dns" ? testZoneAnswerer(this.name) : this.env.clusterAnswer;
      if (!answer) throw new Error(`no cluster DNS view to serve ${where}`);
      const srv: DnsServer = await bindRetry(() =>
        startDnsServer({
          hostname: host,
          port,
          udp: s.protocol === "UDP",
          tcp: s.protocol === "TCP",
          answer,
        })
      );
      bound(srv.port);
      this.#run(this.#stopping(`${s.role} ${where}`, srv, s));
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
      this.#run(processRunning(`redis-server ${where}`, child));
      this.#own(() => Deno.remove(dir, { recursive: true }).catch(() => {}));
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
    // The container's log, as the pod log API serves it. Kept after the pod stops (a kubelet
    // keeps a finished container's log until the pod goes; kwok's Logs object goes with the pod).
    const cri = await Deno.open(`${base}.cri.log`, { create: true, write: true, truncate: true });
    await this.env.publishLogs?.(this.pod, container?.name ?? "agent", `${base}.cri.log`).catch(
      (e) => this.env.log(`pod ${this.key}: publish logs: ${e}`),
    );
    const enc = new TextEncoder();
    let launch: Awaited<ReturnType<AgentSandbox["prepare"]>> | undefined;
    try {
      // A stop while starting (the pod went away): run nothing.
      if (this.#stopped) {
        cri.close();
        return [];
      }
      // Memory cgroup + securityContext identity (see agent_sandbox.ts); released after the stop.
      launch = await this.env.agentSandbox?.prepare(this.pod, container, base);
    } catch (e) {
      cri.close();
      throw e;
    }
    if (launch) {
      const l = launch;
      this.#own(async () => void await l.release());
    }
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
    this.#run(processRunning("agent", child));
    this.#own(async () => {
      await Deno.remove(this.#pidFile!).catch(() => {});
      await Deno.remove(`${base}.resolv.conf`).catch(() => {});
    });
    this.env.log(`pod ${this.key}: agent pid ${child.pid}: ${cmd} ${cmdArgs.join(" ")}`);
    // When the agent exits by itself, the pod's container terminated: report it.
    child.status.then(async (st) => {
      if (child.stopping || this.#stopped) return;
      this.#agentEnded = true;
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
