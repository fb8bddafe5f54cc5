/**
 * A real Kubernetes control plane on loopback for tests, benchmarks and the demo:
 * etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (fake nodes whose
 * kubelet port-forward is served by kwok), all on 127.0.0.1, plus the pod runtime in
 * tests/cluster/runtime/ when it exists. See tests/cluster/README.md.
 *
 * @module
 */

import { ensureBuilt, kubectlCommand } from "./build.ts";
import { KubeClient } from "./client.ts";
import { generatePki, issueClientCert } from "./pki.ts";
import { agentLeftovers } from "./runtime/agent_sandbox.ts";
import {
  boundIpv4Sockets,
  freePort,
  groupMembers,
  isAlive,
  killGroup,
  listeningTcpPorts,
  logTail,
  loopbackOctetsInUse,
  type Proc,
  type ProcSpec,
  spawnProc,
  stopProc,
} from "./proc.ts";

/** A running test cluster. */
export interface Cluster {
  /** State dir (certs, kubeconfigs, logs, state.json). */
  dir: string;
  /** Admin kubeconfig: client certificate in group system:masters. */
  kubeconfig: string;
  /** Bearer-token user (static token file), admin rights. */
  tokenKubeconfig: string;
  /** Exec-plugin user (a script printing an ExecCredential with a token), admin rights. */
  execKubeconfig: string;
  /** `https://127.0.0.1:PORT`. */
  server: string;
  /** Pod IPs, `127.y.0.0/16` (y chosen per cluster). */
  podCIDR: string;
  /** Service cluster IPs, `127.(y+1).0.0/16`. */
  serviceCIDR: string;
  /**
   * New token user (a ServiceAccount `name` in namespace `relay-test-users`, token from the
   * TokenRequest API) bound ONLY to the Role/ClusterRole objects in `manifestPath` (each is
   * created or replaced, then bound to the user; other kinds are ignored). `null` = no rights.
   * Returns the user's kubeconfig path.
   */
  createUser(name: string, manifestPath: string | null): Promise<string>;
  /** Kill kube-apiserver only, for fault tests (SIGTERM, SIGKILL after 1 s; its port closes). */
  stopApiserver(): Promise<void>;
  /** Restart kube-apiserver on the same port; resolves when /readyz is ok. */
  startApiserver(): Promise<void>;
  /** Everything down; checks that no process and no listening port is left (throws if so). */
  stop(): Promise<void>;
}

/** Options for {@link startCluster}. */
export interface StartOptions {
  /** Progress lines (default: stderr). */
  log?: (line: string) => void;
  /** State dir (default: a new temp dir). Must be empty or absent. */
  dir?: string;
  /**
   * "child" (default): components are children of this process (reaped on stop).
   * "orphan": they are detached, so the cluster outlives this process (cli `up --detach`).
   */
  mode?: "child" | "orphan";
  /** Start tests/cluster/runtime/main.ts if it exists (default true). */
  runtime?: boolean;
}

/** Contents of `<dir>/state.json`. */
export interface ClusterState {
  version: 1;
  dir: string;
  repo: string;
  kubeconfig: string;
  tokenKubeconfig: string;
  execKubeconfig: string;
  server: string;
  podCIDR: string;
  serviceCIDR: string;
  ports: { etcd: number; etcdPeer: number; apiserver: number; kwok: number };
  caCert: string;
  adminCert: string;
  adminKey: string;
  /** Components in start order; pid = process group id. */
  procs: { spec: ProcSpec; pid: number }[];
  /** Owner process (the one that will stop it). */
  ownerPid: number;
  /** "child": the owner is the parent of the components and restarts the apiserver on request. */
  ownerMode: "child" | "orphan";
  startSeconds: number;
  nodes: string[];
}

/**
 * Pick this cluster's loopback networks: pods 127.y.0.0/16 (kwok `--cidr`) and services
 * 127.(y+1).0.0/16 (`--service-cluster-ip-range`), y even in 16..238, random among those where
 * nothing is bound yet, so that clusters running side by side (tests, demo, bench) whose runtimes
 * bind pod and service IPs do not collide. Read them from `Cluster.podCIDR`/`serviceCIDR`.
 */
export function chooseCidrs(): { podCIDR: string; serviceCIDR: string; apiServiceIP: string } {
  const used = loopbackOctetsInUse();
  const free: number[] = [];
  for (let y = 16; y <= 238; y += 2) if (!used.has(y) && !used.has(y + 1)) free.push(y);
  const pool = free.length ? free : [16];
  const y = pool[Math.floor(Math.random() * pool.length)];
  return {
    podCIDR: `127.${y}.0.0/16`,
    serviceCIDR: `127.${y + 1}.0.0/16`,
    apiServiceIP: `127.${y + 1}.0.1`,
  };
}
/** Node names created by the harness. */
export const NODES = ["kwok-node-0", "kwok-node-1"];
/** Namespace of the ServiceAccounts made by `createUser`. */
export const USERS_NAMESPACE = "relay-test-users";

const HERE = new URL(".", import.meta.url).pathname;
const REPO = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");
const RUNTIME_MAIN = `${HERE}runtime/main.ts`;
const RUNTIME_STAGES = `${HERE}runtime/stages.yaml`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

function b64(text: string): string {
  const bytes = new TextEncoder().encode(text);
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

function randomToken(): string {
  const b = crypto.getRandomValues(new Uint8Array(24));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

function kubeconfigYaml(server: string, caPem: string, name: string, user: string[]): string {
  return [
    "apiVersion: v1",
    "kind: Config",
    "clusters:",
    "- name: relay-test",
    "  cluster:",
    `    server: ${server}`,
    `    certificate-authority-data: ${b64(caPem)}`,
    "contexts:",
    `- name: ${name}@relay-test`,
    "  context:",
    "    cluster: relay-test",
    `    user: ${name}`,
    "    namespace: default",
    `current-context: ${name}@relay-test`,
    "users:",
    `- name: ${name}`,
    "  user:",
    ...user.map((l) => `    ${l}`),
    "",
  ].join("\n");
}

async function run(cmd: string, args: string[], stdin?: string): Promise<string> {
  const child = new Deno.Command(cmd, {
    args,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const out = await child.output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(
      `${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr).trim()}`,
    );
  }
  return text;
}

/** Parse concatenated JSON objects (what `kubectl create -o json` prints for several docs). */
export function parseJsonStream(text: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  let depth = 0;
  let start = -1;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (inString) {
      if (ch === "\\") i++;
      else if (ch === '"') inString = false;
    } else if (ch === '"') {
      inString = true;
    } else if (ch === "{") {
      if (depth++ === 0) start = i;
    } else if (ch === "}") {
      if (--depth === 0) out.push(JSON.parse(text.slice(start, i + 1)));
    }
  }
  return out;
}

/** Poll `check` every `everyMs` until it returns true; throws `what` + details after timeout. */
async function waitFor(
  what: string,
  timeoutMs: number,
  check: () => Promise<boolean>,
  details: () => string = () => "",
  everyMs = 100,
): Promise<void> {
  const end = performance.now() + timeoutMs;
  let lastErr = "";
  while (performance.now() < end) {
    try {
      if (await check()) return;
    } catch (e) {
      lastErr = e instanceof Error ? e.message : String(e);
    }
    await sleep(everyMs);
  }
  throw new Error(
    `timed out after ${timeoutMs / 1000} s waiting for ${what}${
      lastErr ? ` (last error: ${lastErr})` : ""
    }\n${details()}`,
  );
}

/**
 * RBAC changes reach the authorizer through an informer: wait (max 10 s) until a
 * SubjectAccessReview says the first concrete rule of `role` is allowed for the user.
 */
async function waitForRbac(
  c: KubeClient,
  ns: string,
  name: string,
  role: Record<string, unknown>,
): Promise<void> {
  if (role.kind !== "Role" && role.kind !== "ClusterRole") return;
  const rules = (role.rules ?? []) as {
    apiGroups?: string[];
    resources?: string[];
    verbs?: string[];
  }[];
  const rule = rules.find((r) =>
    r.resources?.length && r.verbs?.length && r.apiGroups?.length && r.verbs[0] !== "*" &&
    r.resources[0] !== "*"
  );
  if (!rule) return;
  const [resource, subresource] = (rule.resources as string[])[0].split("/");
  const meta = role.metadata as { namespace?: string };
  const review = {
    apiVersion: "authorization.k8s.io/v1",
    kind: "SubjectAccessReview",
    spec: {
      user: `system:serviceaccount:${ns}:${name}`,
      groups: ["system:serviceaccounts", `system:serviceaccounts:${ns}`, "system:authenticated"],
      resourceAttributes: {
        namespace: role.kind === "Role" ? meta.namespace : undefined,
        verb: (rule.verbs as string[])[0],
        group: (rule.apiGroups as string[])[0],
        resource,
        subresource,
      },
    },
  };
  await waitFor(
    `RBAC of ${role.kind} ${JSON.stringify(role.metadata)} to apply`,
    10000,
    async () => {
      const r = await c.request(
        "POST",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        review,
      );
      return (r.status as { allowed?: boolean }).allowed === true;
    },
    () => "",
    50,
  );
}

/** A live cluster handle, owned (started here) or attached (from state.json). */
class ClusterHandle implements Cluster {
  #children = new Map<number, Deno.ChildProcess>();
  #stopped = false;
  #unload?: () => void;

  constructor(
    private state: ClusterState,
    private readonly owned: boolean,
    private readonly mode: "child" | "orphan",
    private readonly log: (line: string) => void,
  ) {}

  get dir() {
    return this.state.dir;
  }
  get kubeconfig() {
    return this.state.kubeconfig;
  }
  get tokenKubeconfig() {
    return this.state.tokenKubeconfig;
  }
  get execKubeconfig() {
    return this.state.execKubeconfig;
  }
  get server() {
    return this.state.server;
  }
  get podCIDR() {
    return this.state.podCIDR;
  }
  get serviceCIDR() {
    return this.state.serviceCIDR;
  }

  get statePath(): string {
    return `${this.state.dir}/state.json`;
  }

  /** Remember a spawned component (and its child handle for reaping). */
  track(p: Proc): void {
    if (p.child) this.#children.set(p.pid, p.child);
    const i = this.state.procs.findIndex((x) => x.spec.name === p.spec.name);
    const entry = { spec: p.spec, pid: p.pid };
    if (i >= 0) this.state.procs[i] = entry;
    else this.state.procs.push(entry);
  }

  async save(): Promise<void> {
    const tmp = `${this.statePath}.tmp`;
    await Deno.writeTextFile(tmp, JSON.stringify(this.state, null, 2) + "\n");
    await Deno.rename(tmp, this.statePath);
  }

  async reload(): Promise<void> {
    try {
      this.state = JSON.parse(await Deno.readTextFile(this.statePath));
    } catch {
      // keep what we have
    }
  }

  /**
   * Owner in child mode: kill everything synchronously if this process exits without stop(),
   * and serve apiserver restart requests from attached processes (SIGUSR1 + a request file),
   * so that the restarted apiserver is our child too (reaped by us, no zombie left).
   */
  arm(): void {
    if (!this.owned || this.mode !== "child") return;
    this.#unload = () => {
      if (this.#stopped) return;
      for (const p of [...this.state.procs].reverse()) killGroup(p.pid, "SIGKILL");
    };
    globalThis.addEventListener("unload", this.#unload);
    this.#onUsr1 = () => {
      this.#serveRestart().catch((e) => this.log(`[cluster] restart request failed: ${e}`));
    };
    Deno.addSignalListener("SIGUSR1", this.#onUsr1);
  }

  #onUsr1?: () => void;

  get #requestFile(): string {
    return `${this.state.dir}/start-apiserver.request`;
  }

  async #serveRestart(): Promise<void> {
    if (!await exists(this.#requestFile)) return;
    try {
      const p = this.proc("kube-apiserver");
      if (groupMembers(p.pid).length === 0) {
        this.#children.delete(p.pid);
        this.track(await spawnProc(p.spec, "child"));
        await this.save();
      }
    } finally {
      await Deno.remove(this.#requestFile).catch(() => {});
    }
  }

  client(): KubeClient {
    const s = this.state;
    return new KubeClient(
      s.server,
      Deno.readTextFileSync(s.caCert),
      Deno.readTextFileSync(s.adminCert),
      Deno.readTextFileSync(s.adminKey),
    );
  }

  async spawn(spec: ProcSpec): Promise<Proc> {
    const p = await spawnProc(spec, this.mode);
    this.track(p);
    return p;
  }

  proc(name: string): { spec: ProcSpec; pid: number } {
    const p = this.state.procs.find((x) => x.spec.name === name);
    if (!p) throw new Error(`no component ${name} in ${this.statePath}`);
    return p;
  }

  async waitReadyz(timeoutMs = 60000): Promise<void> {
    const c = this.client();
    try {
      await waitFor(
        "kube-apiserver /readyz",
        timeoutMs,
        async () => {
          const r = await c.request("GET", "/readyz", undefined, 2000);
          return r.text === "ok";
        },
        () => logTail(this.proc("kube-apiserver").spec.log),
      );
    } finally {
      c.close();
    }
  }

  async stopApiserver(): Promise<void> {
    await this.reload();
    const p = this.proc("kube-apiserver");
    // With clients still watching, a SIGTERMed apiserver lingers (>10 s): kill it after 1 s.
    await stopProc({ ...p, child: this.#children.get(p.pid) }, 1000);
    this.#children.delete(p.pid);
    this.log(`[cluster] kube-apiserver stopped`);
  }

  async startApiserver(): Promise<void> {
    await this.reload();
    const p = this.proc("kube-apiserver");
    if (groupMembers(p.pid).length > 0) throw new Error("kube-apiserver is still running");
    if (this.owned) {
      this.track(await spawnProc(p.spec, this.mode));
      await this.save();
    } else if (this.state.ownerMode === "child" && isAlive(this.state.ownerPid)) {
      // Ask the owner to start it as its child (it reaps it later; we may exit first).
      await Deno.writeTextFile(this.#requestFile, String(Deno.pid));
      Deno.kill(this.state.ownerPid, "SIGUSR1");
      await waitFor("the cluster owner to restart kube-apiserver", 15000, async () => {
        if (await exists(this.#requestFile)) return false;
        await this.reload();
        return this.proc("kube-apiserver").pid !== p.pid;
      });
    } else {
      // No live owner: start it detached (an attached process may exit before the cluster).
      this.track(await spawnProc(p.spec, "orphan"));
      await this.save();
    }
    await this.waitReadyz();
    this.log(`[cluster] kube-apiserver restarted (pid ${this.proc("kube-apiserver").pid})`);
  }

  async createUser(name: string, manifestPath: string | null): Promise<string> {
    const c = this.client();
    try {
      const ns = USERS_NAMESPACE;
      await c.create("/api/v1/namespaces", { metadata: { name: ns } });
      await c.create(`/api/v1/namespaces/${ns}/serviceaccounts`, { metadata: { name } });
      const subject = { kind: "ServiceAccount", name, namespace: ns };
      if (manifestPath !== null) {
        const bin = this.proc("etcd").spec.bin;
        const json = await run(kubectlCommand(bin.slice(0, bin.lastIndexOf("/"))), [
          "--kubeconfig",
          this.kubeconfig,
          "create",
          "--dry-run=client",
          "-o",
          "json",
          "-f",
          manifestPath,
        ]);
        const items = parseJsonStream(json).flatMap((o) =>
          (o.kind === "List" ? o.items : [o]) as Record<string, unknown>[]
        );
        const rbac = "/apis/rbac.authorization.k8s.io/v1";
        for (const item of items) {
          const meta = item.metadata as { name: string; namespace?: string };
          if (item.kind === "ClusterRole") {
            await c.create(`${rbac}/clusterroles`, item, true);
            await c.create(`${rbac}/clusterrolebindings`, {
              metadata: { name: `relay-user-${name}-${meta.name}` },
              roleRef: {
                apiGroup: "rbac.authorization.k8s.io",
                kind: "ClusterRole",
                name: meta.name,
              },
              subjects: [subject],
            }, true);
          } else if (item.kind === "Role") {
            const rns = meta.namespace ?? "default";
            item.metadata = { ...meta, namespace: rns };
            await c.create("/api/v1/namespaces", { metadata: { name: rns } });
            await c.create(`${rbac}/namespaces/${rns}/roles`, item, true);
            await c.create(`${rbac}/namespaces/${rns}/rolebindings`, {
              metadata: { name: `relay-user-${name}-${meta.name}`, namespace: rns },
              roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: meta.name },
              subjects: [subject],
            }, true);
          }
          await waitForRbac(c, ns, name, item);
        }
      }
      const tr = await c.request(
        "POST",
        `/api/v1/namespaces/${ns}/serviceaccounts/${name}/token`,
        {
          apiVersion: "authentication.k8s.io/v1",
          kind: "TokenRequest",
          spec: { expirationSeconds: 86400 },
        },
      );
      const token = (tr.status as { token: string }).token;
      await Deno.mkdir(`${this.dir}/users`, { recursive: true });
      const path = `${this.dir}/users/${name}.kubeconfig`;
      await Deno.writeTextFile(
        path,
        kubeconfigYaml(this.server, await Deno.readTextFile(this.state.caCert), name, [
          `token: ${token}`,
        ]),
      );
      return path;
    } finally {
      c.close();
    }
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    await this.reload();
    const errors: string[] = [];
    for (const p of [...this.state.procs].reverse()) {
      try {
        await stopProc({ ...p, child: this.#children.get(p.pid) });
      } catch (e) {
        errors.push(e instanceof Error ? e.message : String(e));
      }
    }
    // Reap children from earlier apiserver incarnations.
    await Promise.all([...this.#children.values()].map((c) => c.status));
    this.#children.clear();
    this.#stopped = true;
    if (this.#unload) globalThis.removeEventListener("unload", this.#unload);
    if (this.#onUsr1) Deno.removeSignalListener("SIGUSR1", this.#onUsr1);
    const left = this.state.procs.filter((p) => isAlive(p.pid)).map((p) => p.spec.name);
    if (left.length) errors.push(`still running: ${left.join(", ")}`);
    const listening = listeningTcpPorts();
    const ports = Object.entries(this.state.ports).filter(([, port]) => listening.has(port));
    if (ports.length) errors.push(`ports still listening: ${JSON.stringify(ports)}`);
    // Nor any socket on the cluster's pod or service IPs (the runtime's servers).
    const nets = [this.state.podCIDR, this.state.serviceCIDR].map((c) =>
      c.split(".").slice(0, 2).join(".") + "."
    );
    const stray = boundIpv4Sockets().filter((s) => nets.some((n) => s.ip.startsWith(n)));
    if (stray.length) {
      errors.push(
        `sockets still bound on cluster IPs: ${
          stray.map((s) => `${s.ip}:${s.port}/${s.proto}`).join(", ")
        }`,
      );
    }
    // Nor any agent process or agent memory cgroup (the runtime removes them with their pods).
    errors.push(...await agentLeftovers(this.dir));
    await Deno.remove(`${this.dir}/etcd-data`, { recursive: true }).catch(() => {});
    if (errors.length) throw new Error(`cluster stop: ${errors.join("; ")}`);
    this.log(`[cluster] stopped (${this.dir})`);
  }
}

/**
 * Build the control plane if needed, then start a new cluster. Resolves when all nodes are
 * Ready, the `default` ServiceAccount exists and (if present) the runtime said `runtime ready`.
 */
export async function startCluster(opts: StartOptions = {}): Promise<Cluster> {
  const log = opts.log ?? ((l: string) => console.error(l));
  const mode = opts.mode ?? "child";
  const { binDir, assetsDir } = await ensureBuilt({ log });
  const kubectl = kubectlCommand(binDir);
  const t0 = performance.now();
  const dir = opts.dir ?? await Deno.makeTempDir({ prefix: "relay-cluster-" });
  await Deno.mkdir(`${dir}/logs`, { recursive: true });
  // A reused dir must not resurrect an old etcd (its tokens and certificates would not match).
  await Deno.remove(`${dir}/etcd-data`, { recursive: true }).catch(() => {});
  await Deno.remove(`${dir}/state.json`).catch(() => {});
  const taken = new Set<number>();
  const port = () => {
    let p = freePort();
    while (taken.has(p)) p = freePort();
    taken.add(p);
    return p;
  };
  const ports = { etcd: port(), etcdPeer: port(), apiserver: port(), kwok: port() };
  const server = `https://127.0.0.1:${ports.apiserver}`;
  const cidrs = chooseCidrs();
  const state: ClusterState = {
    version: 1,
    dir,
    repo: REPO,
    kubeconfig: `${dir}/admin.kubeconfig`,
    tokenKubeconfig: `${dir}/token.kubeconfig`,
    execKubeconfig: `${dir}/exec.kubeconfig`,
    server,
    podCIDR: cidrs.podCIDR,
    serviceCIDR: cidrs.serviceCIDR,
    ports,
    caCert: `${dir}/pki/ca.crt`,
    adminCert: `${dir}/pki/admin.crt`,
    adminKey: `${dir}/pki/admin.key`,
    procs: [],
    ownerPid: Deno.pid,
    ownerMode: mode,
    startSeconds: 0,
    nodes: NODES,
  };
  const h = new ClusterHandle(state, true, mode, log);
  h.arm();
  const logFile = (name: string) => `${dir}/logs/${name}.log`;
  try {
    // etcd first (needs no certificates); PKI and kubeconfigs meanwhile.
    await h.spawn({
      name: "etcd",
      bin: `${binDir}/etcd`,
      args: [
        "--name=relay",
        `--data-dir=${dir}/etcd-data`,
        `--listen-client-urls=http://127.0.0.1:${ports.etcd}`,
        `--advertise-client-urls=http://127.0.0.1:${ports.etcd}`,
        `--listen-peer-urls=http://127.0.0.1:${ports.etcdPeer}`,
        `--initial-advertise-peer-urls=http://127.0.0.1:${ports.etcdPeer}`,
        `--initial-cluster=relay=http://127.0.0.1:${ports.etcdPeer}`,
        "--unsafe-no-fsync",
        "--log-level=warn",
      ],
      log: logFile("etcd"),
    });
    await h.save();
    const pkiDir = `${dir}/pki`;
    const pki = await generatePki(pkiDir, cidrs.apiServiceIP);
    const [admin, kcm, sched, kwok, kubeletClient] = await Promise.all([
      issueClientCert(pkiDir, "admin", "kubernetes-admin", ["system:masters"]),
      issueClientCert(pkiDir, "kcm", "system:kube-controller-manager", ["system:masters"]),
      issueClientCert(pkiDir, "scheduler", "system:kube-scheduler", ["system:masters"]),
      issueClientCert(pkiDir, "kwok", "kwok-controller", ["system:masters"]),
      issueClientCert(pkiDir, "kubelet-client", "kube-apiserver-kubelet-client", [
        "system:masters",
      ]),
    ]);
    const caPem = await Deno.readTextFile(pki.caCert);
    const certUser = async (c: { cert: string; key: string }) => [
      `client-certificate-data: ${b64(await Deno.readTextFile(c.cert))}`,
      `client-key-data: ${b64(await Deno.readTextFile(c.key))}`,
    ];
    const adminToken = randomToken();
    const execToken = randomToken();
    await Deno.writeTextFile(
      `${pkiDir}/tokens.csv`,
      `${adminToken},token-admin,token-admin,"system:masters"\n` +
        `${execToken},exec-admin,exec-admin,"system:masters"\n`,
    );
    const execScript = `${dir}/exec-credential.sh`;
    await Deno.writeTextFile(
      execScript,
      `#!/bin/sh\n# Exec credential plugin for the test cluster's exec-admin user.\nprintf '%s\\n' '${
        JSON.stringify({
          apiVersion: "client.authentication.k8s.io/v1",
          kind: "ExecCredential",
          status: { token: execToken },
        })
      }'\n`,
      { mode: 0o755 },
    );
    const kc = (file: string, name: string, user: string[]) =>
      Deno.writeTextFile(`${dir}/${file}`, kubeconfigYaml(server, caPem, name, user), {
        mode: 0o600,
      });
    await Promise.all([
      kc("admin.kubeconfig", "admin", await certUser(admin)),
      kc("kcm.kubeconfig", "kube-controller-manager", await certUser(kcm)),
      kc("scheduler.kubeconfig", "kube-scheduler", await certUser(sched)),
      kc("kwok.kubeconfig", "kwok", await certUser(kwok)),
      kc("token.kubeconfig", "token-admin", [`token: ${adminToken}`]),
      kc("exec.kubeconfig", "exec-admin", [
        "exec:",
        "  apiVersion: client.authentication.k8s.io/v1",
        `  command: ${execScript}`,
        "  interactiveMode: Never",
        "  provideClusterInfo: false",
      ]),
    ]);

    await waitFor("etcd /health", 30000, async () => {
      const r = await fetch(`http://127.0.0.1:${ports.etcd}/health`, {
        signal: AbortSignal.timeout(1000),
      });
      return (await r.text()).includes('"health":"true"');
    }, () => logTail(logFile("etcd")));

    await h.spawn({
      name: "kube-apiserver",
      bin: `${binDir}/kube-apiserver`,
      args: [
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        `--secure-port=${ports.apiserver}`,
        `--etcd-servers=http://127.0.0.1:${ports.etcd}`,
        `--tls-cert-file=${pki.apiserverCert}`,
        `--tls-private-key-file=${pki.apiserverKey}`,
        `--client-ca-file=${pki.caCert}`,
        `--token-auth-file=${pkiDir}/tokens.csv`,
        "--authorization-mode=RBAC",
        `--service-cluster-ip-range=${cidrs.serviceCIDR}`,
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        `--service-account-key-file=${pki.saPub}`,
        `--service-account-signing-key-file=${pki.saKey}`,
        `--kubelet-client-certificate=${kubeletClient.cert}`,
        `--kubelet-client-key=${kubeletClient.key}`,
        "--kubelet-preferred-address-types=InternalIP",
        "--endpoint-reconciler-type=none",
        "--allow-privileged=true",
        "--profiling=false",
      ],
      log: logFile("kube-apiserver"),
    });
    await h.save();
    await h.waitReadyz();
    log(`[cluster] kube-apiserver ready at ${server} (${elapsed(t0)})`);

    await h.spawn({
      name: "kube-controller-manager",
      bin: `${binDir}/kube-controller-manager`,
      args: [
        `--kubeconfig=${dir}/kcm.kubeconfig`,
        "--leader-elect=false",
        "--secure-port=0",
        `--service-account-private-key-file=${pki.saKey}`,
        `--root-ca-file=${pki.caCert}`,
        "--allocate-node-cidrs=false",
        // Loopback pod IPs are rejected in Endpoints/EndpointSlices: these could only fail.
        "--controllers=*,-endpoints-controller,-endpointslice-controller,-endpointslice-mirroring-controller",
        "--use-service-account-credentials=false",
        "--profiling=false",
      ],
      log: logFile("kube-controller-manager"),
    });
    await h.spawn({
      name: "kube-scheduler",
      bin: `${binDir}/kube-scheduler`,
      args: [
        `--kubeconfig=${dir}/scheduler.kubeconfig`,
        "--leader-elect=false",
        "--secure-port=0",
        "--profiling=false",
      ],
      log: logFile("kube-scheduler"),
    });
    await h.save();

    // kwok's CRDs and the fake nodes, then kwok itself.
    await run(kubectl, [
      "--kubeconfig",
      state.kubeconfig,
      "apply",
      "--server-side",
      "-f",
      `${assetsDir}/crds.yaml`,
    ]);
    const c = h.client();
    try {
      for (const name of NODES) {
        await c.create("/api/v1/nodes", {
          apiVersion: "v1",
          kind: "Node",
          metadata: {
            name,
            labels: {
              "kubernetes.io/hostname": name,
              "kubernetes.io/os": "linux",
              "kubernetes.io/arch": "amd64",
              "node-role.kubernetes.io/agent": "",
              type: "kwok",
            },
            annotations: { "kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0" },
          },
          status: {
            allocatable: { cpu: "32", memory: "256Gi", pods: "110" },
            capacity: { cpu: "32", memory: "256Gi", pods: "110" },
          },
        });
      }
      await run(kubectl, [
        "--kubeconfig",
        state.kubeconfig,
        "wait",
        "--for=condition=established",
        "--timeout=30s",
        "crd/portforwards.kwok.x-k8s.io",
        "crd/clusterportforwards.kwok.x-k8s.io",
        "crd/logs.kwok.x-k8s.io",
      ]);
      const podStages = await exists(RUNTIME_STAGES)
        ? RUNTIME_STAGES
        : `${assetsDir}/pod-stages.yaml`;
      await h.spawn({
        name: "kwok",
        bin: `${binDir}/kwok`,
        args: [
          `--kubeconfig=${dir}/kwok.kubeconfig`,
          `--config=${assetsDir}/node-stages.yaml`,
          `--config=${podStages}`,
          "--manage-all-nodes=true",
          `--cidr=${cidrs.podCIDR}`,
          "--node-ip=127.0.0.1",
          `--node-port=${ports.kwok}`,
          `--server-address=127.0.0.1:${ports.kwok}`,
          "--enable-crds=PortForward,ClusterPortForward,Logs",
          "--node-lease-duration-seconds=40",
        ],
        env: { HOME: dir },
        log: logFile("kwok"),
      });
      await h.save();

      await waitFor("nodes Ready and the default ServiceAccount", 60000, async () => {
        const nodes = await c.request("GET", "/api/v1/nodes", undefined, 2000);
        const items = nodes.items as {
          status?: { conditions?: { type: string; status: string }[] };
        }[];
        const ready = items.filter((n) =>
          n.status?.conditions?.some((x) =>
            x.type === "Ready" && x.status === "True"
          )
        ).length;
        if (ready < NODES.length) return false;
        return (await c.get("/api/v1/namespaces/default/serviceaccounts/default")) !== null;
      }, () => ["kwok", "kube-controller-manager"].map((n) => logTail(logFile(n), 10)).join("\n"));
      await c.create("/api/v1/namespaces", { metadata: { name: USERS_NAMESPACE } });
    } finally {
      c.close();
    }
    log(`[cluster] nodes Ready, default ServiceAccount present (${elapsed(t0)})`);

    if ((opts.runtime ?? true) && await exists(RUNTIME_MAIN)) {
      const deno = Deno.execPath();
      const rt = await h.spawn({
        name: "runtime",
        bin: deno,
        args: [
          "run",
          "-A",
          RUNTIME_MAIN,
          "--kubeconfig",
          state.kubeconfig,
          "--state-dir",
          dir,
          "--repo",
          REPO,
        ],
        cwd: REPO,
        log: logFile("runtime"),
      });
      await h.save();
      await waitFor(
        "runtime ready",
        60000,
        () => {
          if (!isAlive(rt.pid)) throw new Error("runtime exited");
          return Promise.resolve(logTail(logFile("runtime"), 1000).includes("runtime ready"));
        },
        () => logTail(logFile("runtime")),
        200,
      );
      log(`[cluster] runtime ready (${elapsed(t0)})`);
    }
    state.startSeconds = (performance.now() - t0) / 1000;
    await h.save();
    log(`[cluster] ready in ${state.startSeconds.toFixed(1)} s; KUBECONFIG=${state.kubeconfig}`);
    return h;
  } catch (e) {
    await h.stop().catch((e2) => log(`[cluster] cleanup after failed start: ${e2}`));
    throw e;
  }
}

function elapsed(t0: number): string {
  return `${((performance.now() - t0) / 1000).toFixed(1)} s`;
}

/** Attach to a running cluster described by `<dir>/state.json` (stop() stops it). */
export async function attachCluster(
  statePath: string,
  opts: { log?: (line: string) => void } = {},
): Promise<Cluster> {
  const state = JSON.parse(await Deno.readTextFile(statePath)) as ClusterState;
  return attachState(state, opts);
}

/** Like {@link attachCluster}, from an already-read state (e.g. after its owner removed it). */
export function attachState(
  state: ClusterState,
  opts: { log?: (line: string) => void } = {},
): Cluster {
  return new ClusterHandle(state, false, "orphan", opts.log ?? ((l) => console.error(l)));
}

let shared: Promise<Cluster> | undefined;

/**
 * For tests: attach to the cluster started by tests/run.ts (env `RELAY_TEST_CLUSTER` = path of
 * its state.json), else start one (detached, so test sanitizers are not disturbed) and stop it
 * when this process exits. Calling stop() on the shared cluster is a no-op; the owner stops it.
 */
export function sharedCluster(): Promise<Cluster> {
  shared ??= (async () => {
    const path = Deno.env.get("RELAY_TEST_CLUSTER");
    if (path) return noStop(await attachCluster(path));
    const dir = await Deno.makeTempDir({ prefix: "relay-cluster-" });
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", `${HERE}cli.ts`, "up", "--detach", "--state-dir", dir],
      stdin: "null",
      stdout: "piped",
      stderr: "inherit",
    }).output();
    if (!out.success) throw new Error(`starting the shared test cluster failed (see above)`);
    const c = await attachCluster(`${dir}/state.json`);
    globalThis.addEventListener("unload", () => {
      // The detached owner process stops and reaps everything on SIGTERM.
      try {
        const st = JSON.parse(Deno.readTextFileSync(`${dir}/state.json`)) as ClusterState;
        Deno.kill(st.ownerPid, "SIGTERM");
      } catch {
        // nothing to clean
      }
    });
    return noStop(c);
  })();
  return shared;
}

function noStop(c: Cluster): Cluster {
  return {
    dir: c.dir,
    kubeconfig: c.kubeconfig,
    tokenKubeconfig: c.tokenKubeconfig,
    execKubeconfig: c.execKubeconfig,
    server: c.server,
    podCIDR: c.podCIDR,
    serviceCIDR: c.serviceCIDR,
    createUser: (name, manifest) => c.createUser(name, manifest),
    stopApiserver: () => c.stopApiserver(),
    startApiserver: () => c.startApiserver(),
    stop: () => Promise.resolve(),
  };
}
