/**
 * The pod runtime of the test cluster: watches Pods and Services (list+watch, re-list on 410)
 * and plays pods ({@link PodPlayer}), forwards Service cluster IPs like kube-proxy, and serves
 * the cluster DNS.
 *
 * @module
 */

import * as k8s from "@kubernetes/client-node";
import { AgentSandbox } from "./agent_sandbox.ts";
import { type DnsServer, startDnsServer } from "./dns_server.ts";
import { type Backend, type Forwarder, startTcpForwarder, startUdpForwarder } from "./forwarder.ts";
import {
  clusterIPOf,
  isReady,
  keyOf,
  type Proto,
  resolveTargetPort,
  selectedReadyPods,
  shouldPlay,
  type V1Pod,
  type V1Service,
} from "./kube.ts";
import { type PlayerEnv, PodPlayer } from "./pod_player.ts";
import { clusterAnswerer } from "./zones.ts";
import { waitKwokForward } from "./kwok_probe.ts";

/** Cluster DNS address (UDP+TCP port 53). */
export const CLUSTER_DNS_IP = "127.0.10.53";

/** kwok PortForward resource. */
const PF = { group: "kwok.x-k8s.io", version: "v1alpha1", plural: "portforwards" };
/** kwok Logs resource: which file kwok serves as a container's log (the pod log API). */
const LOGS = { group: "kwok.x-k8s.io", version: "v1alpha1", plural: "logs" };

/** Options for {@link Runtime}. */
export interface RuntimeOptions {
  kubeconfig: string;
  stateDir: string;
  agentPath: string;
  dnsIP?: string;
  dnsPort?: number;
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

/** The runtime. `start()` resolves once the first lists are done and the DNS is serving. */
export class Runtime {
  readonly kc = new k8s.KubeConfig();
  readonly core: k8s.CoreV1Api;
  readonly custom: k8s.CustomObjectsApi;
  readonly pods: k8s.Informer<k8s.V1Pod> & k8s.ObjectCache<k8s.V1Pod>;
  readonly services: k8s.Informer<k8s.V1Service> & k8s.ObjectCache<k8s.V1Service>;
  #players = new Map<string, PodPlayer>();
  #chains = new Map<string, Promise<void>>();
  #forwarders = new Map<string, Forwarder>();
  #svcChain: Promise<void> = Promise.resolve();
  #rr = new Map<string, number>();
  #dns?: DnsServer;
  #sandbox?: AgentSandbox;
  #stopped = false;
  #resync?: ReturnType<typeof setInterval>;
  #log: (line: string) => void;
  /** Address the cluster DNS actually serves on (set by start()). */
  dnsIP: string;

  constructor(readonly opts: RuntimeOptions) {
    this.kc.loadFromFile(opts.kubeconfig);
    this.core = this.kc.makeApiClient(k8s.CoreV1Api);
    this.custom = this.kc.makeApiClient(k8s.CustomObjectsApi);
    this.#log = opts.log ?? ((l) => console.log(l));
    this.dnsIP = opts.dnsIP ?? CLUSTER_DNS_IP;
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

  /** Start watching, serving DNS and playing pods. */
  async start(): Promise<void> {
    const answer = clusterAnswerer({
      service: (ns, name) => this.services.get(name, ns),
      pods: (ns) => this.pods.list(ns),
      readyEndpoints: (svc) => selectedReadyPods(svc, this.pods.list(svc.metadata?.namespace)),
    });
    // 127.0.10.53 unless another cluster's runtime holds it: then the next free 127.0.10.x.
    const first = this.opts.dnsIP ?? CLUSTER_DNS_IP;
    const base = first.split(".").map(Number);
    for (let i = 0;; i++) {
      const ip = [...base.slice(0, 3), base[3] + i].join(".");
      try {
        this.#dns = await startDnsServer({ hostname: ip, port: this.opts.dnsPort ?? 53, answer });
        this.dnsIP = ip;
        break;
      } catch (e) {
        if (!(e instanceof Deno.errors.AddrInUse) || i >= 40 || base[3] + i >= 254) throw e;
      }
    }
    this.#log(`cluster DNS on ${this.dnsIP}:${this.#dns!.port} (udp+tcp)`);
    this.#sandbox = await AgentSandbox.create({ stateDir: this.opts.stateDir, log: this.#log });

    const onPod = (pod: V1Pod) => this.#queuePod(keyOf(pod));
    this.pods.on("add", onPod);
    this.pods.on("update", onPod);
    this.pods.on("delete", onPod);
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
        if (shouldPlay(p) !== this.#players.has(k)) this.#queuePod(k);
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

  /** Stop everything: informers, players (agents killed), forwarders, DNS. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    clearInterval(this.#resync);
    await this.pods.stop?.();
    await this.services.stop?.();
    await Promise.allSettled([...this.#players.values()].map((p) => p.stop()));
    this.#players.clear();
    const left = await this.#sandbox?.close();
    if (left?.length) this.#log(`agent cgroups still holding processes: ${left.join(", ")}`);
    await Promise.allSettled([...this.#forwarders.values()].map((f) => f.close()));
    this.#forwarders.clear();
    await this.#dns?.close();
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
    // A pod that went away stops at once, even while its start is still queued or running.
    const [pns, pname] = key.split("/");
    const current = this.pods.get(pname, pns);
    const player = this.#players.get(key);
    if (player && (!current || !shouldPlay(current) || current.metadata?.uid !== player.uid)) {
      player.stop().catch(() => {});
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

  async #syncPod(key: string): Promise<void> {
    if (this.#stopped) return;
    const [ns, name] = key.split("/");
    const pod = this.pods.get(name, ns);
    const want = pod !== undefined && shouldPlay(pod);
    let player = this.#players.get(key);
    if (player && (!want || player.uid !== pod?.metadata?.uid)) {
      this.#players.delete(key);
      await player.stop();
      player = undefined;
    }
    if (want && !player) {
      player = new PodPlayer(pod!, this.#playerEnv());
      this.#players.set(key, player);
      try {
        await player.start();
      } catch (e) {
        this.#log(`pod ${key}: start failed: ${errText(e)}`);
        // Leave it not Ready; the resync retries after the failed player is dropped.
        this.#players.delete(key);
        await player.stop();
      }
    }
  }

  #playerEnv(): PlayerEnv {
    return {
      agentPath: this.opts.agentPath,
      stateDir: this.opts.stateDir,
      dnsServer: this.dnsIP,
      agentSandbox: this.#sandbox,
      log: this.#log,
      publishPorts: (pod, ports) => this.#publish(pod, ports),
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

  async #publish(pod: V1Pod, ports: number[]): Promise<void> {
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
          target: { address: pod.status!.podIP!, port: p },
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

  async #confirmPublished(pod: V1Pod, port: number, cancelled: () => boolean): Promise<void> {
    const kwok = this.#kwokAddr();
    if (!kwok) return;
    const t0 = Date.now();
    const stop = () => cancelled() || this.#stopped;
    const ns = pod.metadata!.namespace!;
    const ok = await waitKwokForward(kwok, ns, pod.metadata!.name!, port, 15000, stop);
    const ms = Date.now() - t0;
    if (stop()) return;
    if (!ok) {
      this.#log(`pod ${keyOf(pod)}: kwok still has no forward for port ${port} after ${ms} ms`);
    } else if (ms > 1000) this.#log(`pod ${keyOf(pod)}: kwok saw the PortForward after ${ms} ms`);
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
      if (!want.has(k)) {
        this.#forwarders.delete(k);
        await f.close();
        this.#log(`service forward ${k} closed`);
      }
    }
    for (const [k, w] of want) {
      if (this.#forwarders.has(k)) continue;
      const opts = {
        hostname: w.ip,
        port: w.port,
        pick: () => this.#pickBackends(w.svcKey, w.port, w.proto),
        log: this.#log,
      };
      try {
        const f = w.proto === "TCP" ? await startTcpForwarder(opts) : await startUdpForwarder({
          ...opts,
          backendAlive: (b) =>
            this.#pickBackends(w.svcKey, w.port, w.proto, false).some((x) =>
              x.hostname === b.hostname && x.port === b.port
            ),
        });
        this.#forwarders.set(k, f);
        this.#log(`service ${w.svcKey}: forwarding ${k}`);
      } catch (e) {
        this.#log(`service ${w.svcKey}: cannot listen on ${k}: ${errText(e)} (retrying)`);
      }
    }
  }

  /** Ready endpoints of a service port, rotated round-robin per call. */
  #pickBackends(svcKey: string, port: number, proto: Proto, rotate = true): Backend[] {
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
    for (const pod of selectedReadyPods(svc, this.pods.list(ns))) {
      const target = resolveTargetPort(
        pod,
        sp.targetPort as number | string | undefined,
        sp.port,
        proto,
      );
      if (target !== undefined) out.push({ hostname: pod.status!.podIP!, port: target });
    }
    if (out.length === 0 || !rotate) return out;
    const rrKey = `${svcKey}:${port}/${proto}`;
    const n = (this.#rr.get(rrKey) ?? 0) % out.length;
    this.#rr.set(rrKey, n + 1);
    return [...out.slice(n), ...out.slice(0, n)];
  }
}
