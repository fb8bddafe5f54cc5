/**
 * The pod runtime of the test cluster: watches Pods and Services (list+watch, re-list on 410)
 * and plays pods ({@link PodPlayer}; pods whose image contains "coredns" serve the cluster DNS),
 * and forwards Service cluster IPs like kube-proxy.
 *
 * @module
 */

import * as k8s from "@kubernetes/client-node";
import { AgentSandbox } from "./agent_sandbox.ts";
import {
  type Backend,
  createTcpForwarder,
  createUdpForwarder,
  DEFAULT_PROPAGATION_DELAY_MS,
  type Forwarder,
} from "./forwarder.ts";
import {
  clusterIPOf,
  DEFAULT_MAX_GRACE_SECONDS,
  isFinished,
  isReady,
  isTerminating,
  keyOf,
  type Proto,
  proxyEndpoints,
  resolveTargetPort,
  selectedReadyPods,
  servingEndpoints,
  shouldPlay,
  terminationOf,
  type V1Pod,
  type V1Service,
} from "./kube.ts";
import { type HostPort, type PlayerEnv, PodPlayer } from "./pod_player.ts";
import { clusterAnswerer } from "./zones.ts";
import type { DnsAnswerer } from "./dns_server.ts";
import { waitKwokForward } from "./kwok_probe.ts";

/** kwok PortForward resource. */
const PF = { group: "kwok.x-k8s.io", version: "v1alpha1", plural: "portforwards" };
/** kwok Logs resource: which file kwok serves as a container's log (the pod log API). */
const LOGS = { group: "kwok.x-k8s.io", version: "v1alpha1", plural: "logs" };

/** Options for {@link Runtime}. */
export interface RuntimeOptions {
  kubeconfig: string;
  stateDir: string;
  agentPath: string;
  /**
   * The kube-dns Service IP written into agent pods' resolv.conf (kubelet's `clusterDNS`);
   * default: the cluster IP of `kube-system/kube-dns`.
   */
  clusterDNS?: string;
  /** Cap of a deleted pod's grace period (default 2 s). */
  maxGraceSeconds?: number;
  /** Delay before Service endpoint changes reach the forwarders (default 1000 ms). */
  propagationDelayMs?: number;
  log?: (line: string) => void;
}

function errCode(e: unknown): number | undefined {
  const c = (e as { code?: unknown })?.code;
  return typeof c === "number" ? c : undefined;
}

function errText(e: unknown): string {
  if (e instanceof Error) {
    const body = (e as { body?: unknown }).body;
    return body ? `${e.message.split("\n")[0]}: ${String(body).slice(0, 300)}` : e.message;
  }
  return String(e);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The runtime. `start()` resolves once the first lists of Services and Pods are done. */
export class Runtime {
  readonly kc = new k8s.KubeConfig();
  readonly core: k8s.CoreV1Api;
  readonly custom: k8s.CustomObjectsApi;
  readonly pods: k8s.Informer<k8s.V1Pod> & k8s.ObjectCache<k8s.V1Pod>;
  readonly services: k8s.Informer<k8s.V1Service> & k8s.ObjectCache<k8s.V1Service>;
  #players = new Map<string, PodPlayer>();
  /** Uids of deleted pods whose termination has begun. */
  #finalized = new Set<string>();
  #chains = new Map<string, Promise<void>>();
  #forwarders = new Map<string, ServiceForward>();
  #svcChain: Promise<void> = Promise.resolve();
  #sandbox?: AgentSandbox;
  /** Uids of agent pods whose container terminated: never run again (restartPolicy Never). */
  #ended = new Set<string>();
  #endpointsQueued = false;
  /** The pods as the cluster DNS sees them (a snapshot, updated after the propagation delay). */
  #dnsPods: readonly V1Pod[] = [];
  #dnsTimers = new Set<ReturnType<typeof setTimeout>>();
  #stopped = false;
  #resync?: ReturnType<typeof setInterval>;
  #log: (line: string) => void;
  #answer: DnsAnswerer;

  constructor(readonly opts: RuntimeOptions) {
    this.kc.loadFromFile(opts.kubeconfig);
    this.core = this.kc.makeApiClient(k8s.CoreV1Api);
    this.custom = this.kc.makeApiClient(k8s.CustomObjectsApi);
    this.#log = opts.log ?? ((l) => console.log(l));
    // The cluster DNS sees pods (headless answers, StatefulSet host names) with the same
    // propagation delay as kube-proxy: CoreDNS learns them from EndpointSlices too.
    const dnsPods = (ns: string) => this.#dnsPods.filter((p) => p.metadata?.namespace === ns);
    this.#answer = clusterAnswerer({
      service: (ns, name) => this.services.get(name, ns),
      pods: dnsPods,
      readyEndpoints: (svc) => selectedReadyPods(svc, dnsPods(svc.metadata?.namespace ?? "")),
    });
    this.pods = k8s.makeInformer(
      this.kc,
      "/api/v1/pods",
      () => this.core.listPodForAllNamespaces(),
    );
    this.services = k8s.makeInformer(
      this.kc,
      "/api/v1/services",
      () => this.core.listServiceForAllNamespaces(),
    );
  }

  /** The cluster DNS address for pods' resolv.conf (see {@link RuntimeOptions.clusterDNS}). */
  get clusterDNS(): string | undefined {
    return this.opts.clusterDNS ??
      clusterIPOf(this.services.get("kube-dns", "kube-system") ?? {});
  }

  /** Start watching and playing pods (coredns pods serve the cluster DNS). */
  async start(): Promise<void> {
    this.#sandbox = await AgentSandbox.create({ stateDir: this.opts.stateDir, log: this.#log });
    const onPod = (pod: V1Pod) => {
      this.#queuePod(keyOf(pod));
      this.#queueEndpoints();
    };
    this.pods.on("add", onPod);
    this.pods.on("update", onPod);
    this.pods.on("delete", (pod: V1Pod) => {
      this.#finalized.delete(pod.metadata?.uid ?? "");
      onPod(pod);
    });
    const onSvc = () => this.#queueServices();
    this.services.on("add", onSvc);
    this.services.on("update", onSvc);
    this.services.on("delete", onSvc);
    for (const [name, inf] of [["pods", this.pods], ["services", this.services]] as const) {
      inf.on("error", (e: unknown) => {
        if (this.#stopped) return;
        this.#log(`watch ${name}: ${errText(e)}; restarting in 1 s`);
        setTimeout(() => {
          if (!this.#stopped) inf.start().catch(() => {});
        }, 1000);
      });
    }
    await this.#startInformer("services", this.services);
    await this.#startInformer("pods", this.pods);
    // Retry what failed (e.g. a port still in use) and catch anything missed.
    this.#resync = setInterval(() => {
      this.#queueServices();
      for (const p of this.pods.list()) {
        const k = keyOf(p);
        const unfinished = isTerminating(p) && !this.#finalized.has(p.metadata?.uid ?? "");
        if (unfinished || shouldPlay(p) !== this.#players.has(k)) this.#queuePod(k);
      }
    }, 5000);
  }

  /**
   * Start an informer and wait until its first list is done (it has a resourceVersion). A failed
   * list does not throw from start(): the error handler restarts it, so poll (max 60 s).
   */
  async #startInformer(name: string, inf: { start(): Promise<void> }): Promise<void> {
    await inf.start().catch((e) => this.#log(`start ${name}: ${errText(e)}`));
    const rv = () =>
      (inf as unknown as { latestResourceVersion(): string }).latestResourceVersion();
    const end = Date.now() + 60000;
    while (!rv()) {
      if (Date.now() > end) throw new Error(`initial list of ${name} not done after 60 s`);
      await sleep(100);
    }
  }

  /** Stop everything: informers, players (agents killed), forwarders. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    clearInterval(this.#resync);
    for (const t of this.#dnsTimers) clearTimeout(t);
    await this.pods.stop?.();
    await this.services.stop?.();
    await Promise.allSettled([...this.#players.values()].map((p) => p.stop()));
    this.#players.clear();
    const left = await this.#sandbox?.close();
    if (left?.length) this.#log(`agent cgroups still holding processes: ${left.join(", ")}`);
    await Promise.allSettled([...this.#forwarders.values()].map((f) => f.fwd.close()));
    this.#forwarders.clear();
  }

  /** This runtime's agent memory cgroups dir (pods in `<dir>/<ns>_<pod>`), once started. */
  get agentCgroupDir(): string | undefined {
    return this.#sandbox?.cgroups?.dir;
  }

  /** Pid of the agent process of a pod (for tests). */
  agentPid(namespace: string, name: string): number | undefined {
    return this.#players.get(`${namespace}/${name}`)?.agentPid;
  }

  // ---- pods ----

  #queuePod(key: string): void {
    if (this.#stopped) return;
    const [pns, pname] = key.split("/");
    const current = this.pods.get(pname, pns);
    const player = this.#players.get(key);
    if (player && (!current || current.metadata?.uid !== player.uid || isFinished(current))) {
      // The pod object vanished (or finished): its processes stop at once.
      player.stop().catch(() => {});
    } else if (player && current && isTerminating(current)) {
      // Deleted: the graceful termination starts now, even while the start is still queued.
      player.terminate(terminationOf(current, this.#maxGrace)).catch(() => {});
    }
    const prev = this.#chains.get(key) ?? Promise.resolve();
    const next = prev.then(() => this.#syncPod(key)).catch((e) =>
      this.#log(`pod ${key}: ${errText(e)}`)
    );
    this.#chains.set(key, next);
    next.then(() => {
      if (this.#chains.get(key) === next) this.#chains.delete(key);
    });
  }

  get #maxGrace(): number {
    return this.opts.maxGraceSeconds ?? DEFAULT_MAX_GRACE_SECONDS;
  }

  async #syncPod(key: string): Promise<void> {
    if (this.#stopped) return;
    const [ns, name] = key.split("/");
    const pod = this.pods.get(name, ns);
    let player = this.#players.get(key);
    if (player && (!pod || player.uid !== pod.metadata?.uid || isFinished(pod))) {
      this.#players.delete(key);
      await player.stop();
      player = undefined;
    }
    if (pod && isTerminating(pod)) {
      await this.#terminate(pod, player);
      return;
    }
    const want = pod !== undefined && shouldPlay(pod) && !this.#ended.has(pod.metadata?.uid ?? "");
    if (want && !player) {
      player = new PodPlayer(pod!, this.#playerEnv());
      this.#players.set(key, player);
      try {
        await player.start();
      } catch (e) {
        this.#log(`pod ${key}: start failed: ${errText(e)}`);
        // Leave it not Ready; the resync retries after the failed player is dropped, unless the
        // agent's container ran and terminated (its pod is being marked finished).
        if (player.agentEnded) this.#ended.add(player.uid);
        this.#players.delete(key);
        await player.stop();
      }
    }
  }

  /**
   * A deleted pod, as a kubelet ends it: the player's graceful termination (preStop, SIGTERM,
   * SIGKILL at the end of the grace period), then the terminal status (containers terminated,
   * phase Succeeded if everything exited 0, else Failed), then the pod object is removed
   * (delete with grace period 0, uid precondition). Unscheduled pods are the apiserver's.
   */
  async #terminate(pod: V1Pod, player: PodPlayer | undefined): Promise<void> {
    const uid = pod.metadata?.uid ?? "";
    if (!pod.spec?.nodeName || this.#finalized.has(uid)) return;
    this.#finalized.add(uid);
    const key = keyOf(pod);
    const t = terminationOf(pod, this.#maxGrace);
    if (player) {
      this.#log(`pod ${key} deleted: grace ${t.graceMs} ms, preStop ${t.preStopMs} ms`);
      const code = await player.terminate(t);
      if (this.#players.get(key) === player) this.#players.delete(key);
      if (this.#stopped) return;
      await this.#markFinished(pod, code).catch((e) => this.#log(`pod ${key}: ${errText(e)}`));
    }
    try {
      await this.core.deleteNamespacedPod({
        name: pod.metadata!.name!,
        namespace: pod.metadata!.namespace!,
        gracePeriodSeconds: 0,
        body: { gracePeriodSeconds: 0, preconditions: { uid } },
      });
      this.#log(`pod ${key} removed`);
    } catch (e) {
      const code = errCode(e);
      if (code !== 404 && code !== 409) throw new Error(`delete pod ${key}: ${errText(e)}`);
    }
  }

  #playerEnv(): PlayerEnv {
    return {
      agentPath: this.opts.agentPath,
      stateDir: this.opts.stateDir,
      agentSandbox: this.#sandbox,
      dnsServer: this.clusterDNS ?? "",
      clusterAnswer: this.#answer,
      log: this.#log,
      publishPorts: (pod, ports, targets) => this.#publish(pod, ports, targets),
      confirmPublished: (pod, port, cancelled) => this.#confirmPublished(pod, port, cancelled),
      unpublish: (ns, name) => this.#unpublish(ns, name),
      publishLogs: (pod, container, file) => this.#publishLogs(pod, container, file),
      markReady: (pod) => this.#markReady(pod),
      markFinished: (pod, code, reason) => this.#markFinished(pod, code, reason),
    };
  }

  /**
   * A kwok `Logs` object naming `file` as the container's log, owned by the pod (so the garbage
   * collector removes it with the pod, as a kubelet drops a container's log with its pod); waits
   * until kwok serves it (its informer lags), at most 15 s.
   */
  async #publishLogs(pod: V1Pod, container: string, file: string): Promise<void> {
    const ns = pod.metadata!.namespace!;
    const name = pod.metadata!.name!;
    const body = {
      apiVersion: `${LOGS.group}/${LOGS.version}`,
      kind: "Logs",
      metadata: {
        name,
        namespace: ns,
        labels: { "relay-test/runtime": "true" },
        ownerReferences: [{ apiVersion: "v1", kind: "Pod", name, uid: pod.metadata!.uid! }],
      },
      spec: { logs: [{ containers: [container], logsFile: file }] },
    };
    for (let i = 0;; i++) {
      try {
        await this.custom.createNamespacedCustomObject({ ...LOGS, namespace: ns, body });
        break;
      } catch (e) {
        if (errCode(e) === 409 && i < 5) {
          // A leftover from an earlier pod of the same name: replace it.
          await this.custom.deleteNamespacedCustomObject({ ...LOGS, namespace: ns, name })
            .catch(() => {});
          continue;
        }
        throw new Error(`create Logs ${ns}/${name}: ${errText(e)}`);
      }
    }
    const kwok = this.#kwokAddr();
    if (!kwok) return;
    const url = `http://${kwok.hostname}:${kwok.port}/containerLogs/${encodeURIComponent(ns)}/${
      encodeURIComponent(name)
    }/${encodeURIComponent(container)}?tailLines=1`;
    const end = Date.now() + 15000;
    for (;;) {
      const ok = await fetch(url).then(async (r) => {
        await r.body?.cancel();
        return r.ok;
      }, () => false);
      if (ok) return;
      if (Date.now() > end || this.#stopped) {
        this.#log(`pod ${keyOf(pod)}: kwok does not serve its log after 15 s`);
        return;
      }
      await sleep(100);
    }
  }

  async #publish(
    pod: V1Pod,
    ports: number[],
    targets?: ReadonlyMap<number, HostPort>,
  ): Promise<void> {
    const ns = pod.metadata!.namespace!;
    const name = pod.metadata!.name!;
    const body = {
      apiVersion: `${PF.group}/${PF.version}`,
      kind: "PortForward",
      metadata: {
        name,
        namespace: ns,
        labels: { "relay-test/runtime": "true" },
        ownerReferences: [{ apiVersion: "v1", kind: "Pod", name, uid: pod.metadata!.uid! }],
      },
      spec: {
        forwards: ports.map((p) => ({
          ports: [p],
          target: targets?.has(p)
            ? { address: targets.get(p)!.hostname, port: targets.get(p)!.port }
            : { address: pod.status!.podIP!, port: p },
        })),
      },
    };
    if (ports.length === 0) return; // nothing to forward to
    for (let i = 0;; i++) {
      try {
        await this.custom.createNamespacedCustomObject({ ...PF, namespace: ns, body });
        return;
      } catch (e) {
        if (errCode(e) === 409 && i < 5) {
          // A leftover from an earlier pod of the same name: replace it.
          await this.#unpublish(ns, name);
          continue;
        }
        throw new Error(`create PortForward ${ns}/${name}: ${errText(e)}`);
      }
    }
  }

  /** kwok's kubelet-like server from `<state-dir>/state.json` (`ports.kwok`), if known. */
  #kwokAddr(): { hostname: string; port: number } | undefined {
    try {
      const st = JSON.parse(Deno.readTextFileSync(`${this.opts.stateDir}/state.json`));
      const port = Number(st?.ports?.kwok);
      return port > 0 ? { hostname: "127.0.0.1", port } : undefined;
    } catch {
      return undefined;
    }
  }

  /** Waits (at most 15 s) until kwok serves the pod's forward; false if it never did. */
  async #confirmPublished(pod: V1Pod, port: number, cancelled: () => boolean): Promise<boolean> {
    const kwok = this.#kwokAddr();
    if (!kwok) return true;
    const t0 = Date.now();
    const stop = () => cancelled() || this.#stopped;
    const ns = pod.metadata!.namespace!;
    const ok = await waitKwokForward(kwok, ns, pod.metadata!.name!, port, 15000, stop);
    const ms = Date.now() - t0;
    if (stop()) return true;
    if (!ok) {
      this.#log(`pod ${keyOf(pod)}: kwok still has no forward for port ${port} after ${ms} ms`);
    } else if (ms > 1000) this.#log(`pod ${keyOf(pod)}: kwok saw the PortForward after ${ms} ms`);
    return ok;
  }

  async #unpublish(ns: string, name: string): Promise<void> {
    try {
      await this.custom.deleteNamespacedCustomObject({ ...PF, namespace: ns, name });
    } catch (e) {
      if (errCode(e) !== 404) throw new Error(`delete PortForward ${ns}/${name}: ${errText(e)}`);
    }
  }

  async #patchStatus(pod: V1Pod, status: Record<string, unknown>): Promise<void> {
    const ns = pod.metadata!.namespace!;
    const name = pod.metadata!.name!;
    for (let i = 0;; i++) {
      try {
        await this.core.patchNamespacedPodStatus(
          { name, namespace: ns, body: { metadata: { uid: pod.metadata!.uid }, status } },
          k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.StrategicMergePatch),
        );
        return;
      } catch (e) {
        const code = errCode(e);
        if (code === 404 || code === 409) return; // gone, or a new pod with the same name
        if (i >= 5) throw new Error(`patch status of ${ns}/${name}: ${errText(e)}`);
        await sleep(200);
      }
    }
  }

  async #markReady(pod: V1Pod): Promise<void> {
    const current = this.pods.get(pod.metadata!.name!, pod.metadata!.namespace!) ?? pod;
    if (isReady(current)) return;
    const now = new Date().toISOString();
    await this.#patchStatus(pod, {
      conditions: [
        { type: "Ready", status: "True", lastTransitionTime: now },
        { type: "ContainersReady", status: "True", lastTransitionTime: now },
      ],
      containerStatuses: (pod.spec?.containers ?? []).map((c) => ({
        name: c.name,
        image: c.image ?? "",
        imageID: "",
        ready: true,
        started: true,
        restartCount: 0,
        state: { running: { startedAt: now } },
      })),
    });
  }

  async #markFinished(pod: V1Pod, exitCode: number, reason?: string): Promise<void> {
    const now = new Date().toISOString();
    const ok = exitCode === 0;
    await this.#patchStatus(pod, {
      phase: ok ? "Succeeded" : "Failed",
      conditions: [
        { type: "Ready", status: "False", reason: "PodCompleted", lastTransitionTime: now },
        {
          type: "ContainersReady",
          status: "False",
          reason: "PodCompleted",
          lastTransitionTime: now,
        },
      ],
      containerStatuses: (pod.spec?.containers ?? []).map((c) => ({
        name: c.name,
        image: c.image ?? "",
        imageID: "",
        ready: false,
        started: false,
        restartCount: 0,
        state: {
          terminated: {
            exitCode,
            reason: reason ?? (ok ? "Completed" : "Error"),
            startedAt: pod.status?.startTime ?? now,
            finishedAt: now,
          },
        },
      })),
    });
  }

  // ---- services ----

  #queueServices(): void {
    if (this.#stopped) return;
    this.#svcChain = this.#svcChain.then(() => this.#syncServices()).catch((e) =>
      this.#log(`services: ${errText(e)}`)
    );
  }

  async #syncServices(): Promise<void> {
    if (this.#stopped) return;
    const want = new Map<string, { svcKey: string; ip: string; port: number; proto: Proto }>();
    for (const svc of this.services.list()) {
      const ip = clusterIPOf(svc);
      if (!ip) continue;
      for (const p of svc.spec?.ports ?? []) {
        const proto = (p.protocol ?? "TCP") as Proto | "SCTP";
        if (proto === "SCTP") continue;
        want.set(`${ip}:${p.port}/${proto}`, { svcKey: keyOf(svc), ip, port: p.port, proto });
      }
    }
    for (const [k, f] of this.#forwarders) {
      const w = want.get(k);
      if (!w || w.svcKey !== f.svcKey) {
        this.#forwarders.delete(k);
        await f.fwd.close();
        this.#log(`service forward ${k} closed`);
      }
    }
    for (const [k, w] of want) {
      if (this.#forwarders.has(k)) continue;
      const opts = {
        hostname: w.ip,
        port: w.port,
        propagationDelayMs: this.opts.propagationDelayMs ?? DEFAULT_PROPAGATION_DELAY_MS,
        log: this.#log,
      };
      const fwd = w.proto === "TCP" ? createTcpForwarder(opts) : createUdpForwarder(opts);
      this.#forwarders.set(k, { ...w, fwd, last: "" });
      this.#log(`service ${w.svcKey}: forwarding ${k}`);
    }
    this.#publishEndpoints();
  }

  /** Recompute every Service's endpoints once the current burst of events is handled. */
  #queueEndpoints(): void {
    if (this.#endpointsQueued || this.#stopped) return;
    this.#endpointsQueued = true;
    queueMicrotask(() => {
      this.#endpointsQueued = false;
      this.#publishEndpoints();
    });
  }

  /** Hand each forwarder its Service's endpoints (applied after the propagation delay). */
  #publishEndpoints(): void {
    if (this.#stopped) return;
    const snapshot = [...this.pods.list()];
    const delay = this.opts.propagationDelayMs ?? DEFAULT_PROPAGATION_DELAY_MS;
    const t = setTimeout(() => {
      this.#dnsTimers.delete(t);
      this.#dnsPods = snapshot;
    }, delay);
    this.#dnsTimers.add(t);
    for (const f of this.#forwarders.values()) {
      const eps = this.#endpoints(f.svcKey, f.port, f.proto, proxyEndpoints);
      const serving = this.#endpoints(f.svcKey, f.port, f.proto, servingEndpoints);
      const text = JSON.stringify([eps, serving]);
      if (text === f.last) continue;
      f.last = text;
      f.fwd.setEndpoints(eps, serving);
    }
  }

  /**
   * A Service port's endpoints, as pod IP + target port: those kube-proxy sends new connections
   * to ({@link proxyEndpoints}) or the serving ones ({@link servingEndpoints}).
   */
  #endpoints(
    svcKey: string,
    port: number,
    proto: Proto,
    which: (svc: V1Service, pods: Iterable<V1Pod>) => V1Pod[],
  ): Backend[] {
    const [ns, name] = svcKey.split("/");
    const svc: V1Service | undefined = this.services.get(name, ns);
    const sp = svc?.spec?.ports?.find((p) => p.port === port && (p.protocol ?? "TCP") === proto);
    if (!svc || !sp) return [];
    if (ns === "default" && name === "kubernetes") {
      // The apiserver's own Service (its endpoints cannot be loopback): the real apiserver.
      const url = new URL(this.kc.getCurrentCluster()?.server ?? "https://127.0.0.1:6443");
      return [{ hostname: url.hostname.replace(/^\[|\]$/g, ""), port: Number(url.port || 443) }];
    }
    const out: Backend[] = [];
    for (const pod of which(svc, this.pods.list(ns))) {
      const target = resolveTargetPort(
        pod,
        sp.targetPort as number | string | undefined,
        sp.port,
        proto,
      );
      if (target !== undefined) out.push({ hostname: pod.status!.podIP!, port: target });
    }
    return out;
  }
}

/** A Service port's forwarder and the endpoints last handed to it. */
interface ServiceForward {
  svcKey: string;
  ip: string;
  port: number;
  proto: Proto;
  fwd: Forwarder;
  /** JSON of the endpoints last passed to setEndpoints (to skip unchanged updates). */
  last: string;
}
