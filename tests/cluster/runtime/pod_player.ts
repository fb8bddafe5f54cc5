/**
 * Plays one pod's containers: the relay agent as a local `deno run agent.ts` process (in a
 * private mount namespace whose /etc/resolv.conf points at the cluster DNS), or, for other pods,
 * real servers bound to the pod IP (HTTP, test-zone DNS, redis-server). Then it publishes a kwok
 * `PortForward` for the pod and marks the pod Ready.
 *
 * A deleted pod ends as a kubelet ends it ({@link PodPlayer.terminate}): the preStop sleep (the
 * servers serve as before), then SIGTERM — our servers stop accepting (listeners released, UDP
 * sockets closed) and finish their open TCP connections; processes get SIGTERM — then SIGKILL
 * (connections closed) when the grace period is over.
 *
 * @module
 */

import { type ManagedChild, spawnChild } from "./child.ts";
import { type DnsAnswerer, type DnsServer, startDnsServer } from "./dns_server.ts";
import { type EchoServer, startTcpEcho, startUdpEcho } from "./echo_server.ts";
import {
  agentArgs,
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
  log: (line: string) => void;
  /** Publish forwards for these pod ports (kwok PortForward). */
  publishPorts(pod: V1Pod, ports: number[]): Promise<void>;
  /** Resolve once the port-forward to `port` really works (kwok saw the PortForward). */
  confirmPublished?(pod: V1Pod, port: number, cancelled: () => boolean): Promise<void>;
  /** Remove the pod's PortForward (ignore not-found). */
  unpublish(namespace: string, name: string): Promise<void>;
  /** Mark the pod's containers ready (status subresource). */
  markReady(pod: V1Pod): Promise<void>;
  /** Mark the pod finished (agent exited by itself). */
  markFinished(pod: V1Pod, exitCode: number): Promise<void>;
}

type Closer = () => Promise<void>;

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
      ? [await this.#startAgent()]
      : await this.#startServers();
    if (this.#stopped) return;
    await this.env.publishPorts(this.pod, ports);
    this.#own(() => this.env.unpublish(this.namespace, this.name));
    if (ports.length && this.env.confirmPublished) {
      await this.env.confirmPublished(this.pod, ports[0], () => this.#stopped);
    }
    if (this.#stopped) return;
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
    const where = `${this.ip}:${s.port}/${s.protocol}`;
    if (s.role === "echo") {
      const srv: EchoServer = await bindRetry(() =>
        s.protocol === "TCP" ? startTcpEcho(this.ip, s.port) : startUdpEcho(this.ip, s.port)
      );
      this.#run(this.#stopping(`echo ${where}`, srv, s));
    } else if (s.role === "http") {
      const srv: PodHttpServer = await bindRetry(() =>
        startPodHttpServer(this.ip, s.port, this.name)
      );
      this.#run(this.#stopping(`http ${where}`, srv, s));
    } else if (s.role === "dns" || s.role === "cluster-dns") {
      const answer = s.role === "dns" ? testZoneAnswerer(this.name) : this.env.clusterAnswer;
      if (!answer) throw new Error(`no cluster DNS view to serve ${where}`);
      const srv: DnsServer = await bindRetry(() =>
        startDnsServer({
          hostname: this.ip,
          port: s.port,
          udp: s.protocol === "UDP",
          tcp: s.protocol === "TCP",
          answer,
        })
      );
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

  async #startAgent(): Promise<number> {
    const container = this.pod.spec?.containers?.[0];
    const [args, port] = agentArgs(container?.args, this.ip);
    const dir = `${this.env.stateDir}/agents`;
    await Deno.mkdir(dir, { recursive: true });
    const base = `${dir}/${this.namespace}_${this.name}`;
    const deno = Deno.execPath();
    const denoArgs = ["run", "-A", "--unstable-net", this.env.agentPath, ...args];
    let cmd = deno;
    let cmdArgs = denoArgs;
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
        deno,
        ...denoArgs,
      ];
    }
    let ready!: () => void;
    const listening = new Promise<void>((r) => ready = r);
    const child = await spawnChild(cmd, {
      args: cmdArgs,
      logFile: `${base}.log`,
      env: { NO_COLOR: "1" },
      onLine: (line) => {
        this.env.log(`agent ${this.key}: ${line}`);
        if (/listening on /.test(line)) ready();
      },
    });
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
      this.env.log(`agent ${this.key} exited with code ${st.code}`);
      await Deno.remove(this.#pidFile!).catch(() => {});
      await this.env.unpublish(this.namespace, this.name).catch(() => {});
      await this.env.markFinished(this.pod, st.code).catch((e) =>
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
    return port;
  }
}
