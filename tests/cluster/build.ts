/**
 * Builds (once) and caches the control-plane binaries used by the test cluster:
 * etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (module `build/k8s`), kwok
 * (module `build/kwok`), plus kwok's Stage and CRD YAML copied from the Go module cache.
 *
 * Cache: `~/.cache/kubectl-relay/cluster/<hash>/` where `<hash>` is the first 16 hex digits of
 * SHA-256 over the two modules' go.mod and go.sum. A new build only happens when those change.
 *
 * Run directly to build: `deno run -A tests/cluster/build.ts`.
 *
 * @module
 */

/** The result of {@link ensureBuilt}. */
export interface BuildResult {
  /** Directory holding etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok, kubectl. */
  binDir: string;
  /** Directory with kwok YAML: `node-stages.yaml`, `pod-stages.yaml`, `crds.yaml`. */
  assetsDir: string;
  /** True when this call ran the build. */
  built: boolean;
  /** Seconds spent in this call. */
  seconds: number;
}

/** Names of the binaries in `binDir`. */
export const BINARIES = [
  "etcd",
  "kube-apiserver",
  "kube-controller-manager",
  "kube-scheduler",
  "kwok",
  "kubectl",
] as const;

const HERE = new URL(".", import.meta.url).pathname;
const MODULE_FILES = ["k8s/go.mod", "k8s/go.sum", "kwok/go.mod", "kwok/go.sum"];
/** Bump when the build recipe (flags, binaries) changes: part of the cache key. */
const RECIPE = "2: +kubectl, version ldflags";

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** The cache directory for the currently pinned module versions. */
export async function cacheDir(): Promise<string> {
  const parts = await Promise.all(MODULE_FILES.map((f) => Deno.readFile(`${HERE}build/${f}`)));
  parts.push(new TextEncoder().encode(RECIPE));
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    all.set(p, off);
    off += p.length;
  }
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", all));
  const hex = Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("").slice(0, 16);
  const home = Deno.env.get("XDG_CACHE_HOME") ?? `${Deno.env.get("HOME") ?? "/tmp"}/.cache`;
  return `${home}/kubectl-relay/cluster/${hex}`;
}

async function complete(dir: string): Promise<boolean> {
  for (const b of BINARIES) if (!await exists(`${dir}/bin/${b}`)) return false;
  return await exists(`${dir}/assets/crds.yaml`);
}

/** `go` from PATH, else /usr/local/go/bin/go; throws a clear error if there is none. */
export function goCommand(): string {
  const dirs = (Deno.env.get("PATH") ?? "").split(":").filter(Boolean);
  for (const dir of [...dirs, "/usr/local/go/bin"]) {
    try {
      if (Deno.statSync(`${dir}/go`).isFile) return `${dir}/go`;
    } catch {
      // not here
    }
  }
  throw new Error(
    "no `go` on PATH or in /usr/local/go/bin: the test control plane is built with Go >= 1.26 " +
      "(see tests/cluster/README.md, 'Fresh machine')",
  );
}

/** Run `go build -v`, printing a progress line at most every 15 s. */
async function goBuild(
  cwd: string,
  args: string[],
  label: string,
  log: (line: string) => void,
  ldflags = "",
): Promise<void> {
  const t0 = performance.now();
  const child = new Deno.Command(goCommand(), {
    args: ["build", "-v", "-trimpath", `-ldflags=-s -w ${ldflags}`, ...args],
    cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let packages = 0;
  let last = performance.now();
  const tail: string[] = [];
  const decoder = new TextDecoder();
  const drain = async (stream: ReadableStream<Uint8Array>) => {
    let pending = "";
    for await (const chunk of stream) {
      pending += decoder.decode(chunk, { stream: true });
      const lines = pending.split("\n");
      pending = lines.pop() ?? "";
      for (const line of lines) {
        packages++;
        tail.push(line);
        if (tail.length > 40) tail.shift();
        if (performance.now() - last > 15000) {
          last = performance.now();
          log(
            `[build] ${label}: ${packages} packages so far (${
              ((last - t0) / 1000).toFixed(0)
            } s), now ${line}`,
          );
        }
      }
    }
  };
  const [status] = await Promise.all([child.status, drain(child.stdout), drain(child.stderr)]);
  if (!status.success) {
    throw new Error(
      `go build ${args.join(" ")} (in ${cwd}) failed with code ${status.code}:\n${tail.join("\n")}`,
    );
  }
  log(`[build] ${label}: done in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
}

async function goListDir(cwd: string, mod: string): Promise<string> {
  const out = await new Deno.Command(goCommand(), {
    args: ["list", "-m", "-f", "{{.Dir}}", mod],
    cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`go list -m ${mod} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout).trim();
}

/** Copy the kwok Stage and CRD YAML we use out of the Go module cache. */
async function copyAssets(kwokModDir: string, assets: string): Promise<void> {
  await Deno.mkdir(assets, { recursive: true });
  // Atomic replacement: running clusters may read these files at any time.
  const writeTextFile = async (path: string, text: string) => {
    await Deno.writeTextFile(`${path}.tmp${Deno.pid}`, text);
    await Deno.rename(`${path}.tmp${Deno.pid}`, path);
  };
  const join = async (files: string[]) =>
    (await Promise.all(files.map((f) => Deno.readTextFile(`${kwokModDir}/${f}`)))).map((t) =>
      t.trim()
    ).join("\n---\n") + "\n";
  await writeTextFile(
    `${assets}/node-stages.yaml`,
    await join([
      "kustomize/stage/node/fast/node-initialize.yaml",
      "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    ]),
  );
  // Not pod-complete.yaml: it would mark every Job pod Succeeded at once (see README).
  await writeTextFile(
    `${assets}/pod-stages.yaml`,
    await join([
      "kustomize/stage/pod/fast/pod-ready.yaml",
      "kustomize/stage/pod/fast/pod-delete.yaml",
    ]),
  );
  await writeTextFile(
    `${assets}/crds.yaml`,
    await join(CRD_FILES.map((f) => `kustomize/crd/bases/${f}`)),
  );
}

/** kwok CRDs the runtime uses: port-forwards, and logs (the pod log API for agent pods). */
const CRD_FILES = [
  "kwok.x-k8s.io_portforwards.yaml",
  "kwok.x-k8s.io_clusterportforwards.yaml",
  "kwok.x-k8s.io_logs.yaml",
];

/** Whether the cached `crds.yaml` holds every CRD of {@link CRD_FILES} (older caches lack logs). */
async function crdsCurrent(dir: string): Promise<boolean> {
  const text = await Deno.readTextFile(`${dir}/assets/crds.yaml`).catch(() => "");
  return text.includes("name: logs.kwok.x-k8s.io");
}

/**
 * `-X` flags stamping the Kubernetes version from go.mod into the binaries (otherwise they report
 * `v0.0.0-master+$Format:%H$`, which version-parsing clients choke on).
 */
async function versionLdflags(k8sModDir: string): Promise<string> {
  const gomod = await Deno.readTextFile(`${k8sModDir}/go.mod`);
  const m = gomod.match(/^\s*k8s\.io\/kubernetes v(\d+)\.(\d+)\.(\d+)\s*$/m);
  if (!m) throw new Error("k8s.io/kubernetes version not found in build/k8s/go.mod");
  const version = `v${m[1]}.${m[2]}.${m[3]}`;
  return ["k8s.io/component-base/version", "k8s.io/client-go/pkg/version"].flatMap((pkg) => [
    `-X ${pkg}.gitVersion=${version}`,
    `-X ${pkg}.gitMajor=${m[1]}`,
    `-X ${pkg}.gitMinor=${m[2]}`,
    `-X ${pkg}.gitTreeState=clean`,
    `-X ${pkg}.buildDate=1970-01-01T00:00:00Z`,
  ]).join(" ");
}

/**
 * The kubectl to use: the one on PATH if any (v1.32 on our machines), else the one we build
 * (v1.36.3, in `binDir`).
 */
export function kubectlCommand(binDir: string): string {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (!dir) continue;
    try {
      if (Deno.statSync(`${dir}/kubectl`).isFile) return "kubectl";
    } catch {
      // not here
    }
  }
  return `${binDir}/kubectl`;
}

/** Serialise concurrent builds with a lock directory (stale after its owner pid is gone). */
async function withLock<T>(
  dir: string,
  log: (l: string) => void,
  fn: () => Promise<T>,
): Promise<T> {
  const lock = `${dir}.lock`;
  await Deno.mkdir(`${dir}/..`, { recursive: true });
  let announced = false;
  for (;;) {
    try {
      await Deno.mkdir(lock);
      await Deno.writeTextFile(`${lock}/pid`, String(Deno.pid));
      break;
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
      let owner = 0;
      try {
        owner = Number(await Deno.readTextFile(`${lock}/pid`));
      } catch { /* being created */ }
      if (owner > 0 && !await exists(`/proc/${owner}`)) {
        await Deno.remove(lock, { recursive: true }).catch(() => {});
        continue;
      }
      if (!announced) {
        log(`[build] waiting for another build (pid ${owner}) to finish`);
        announced = true;
      }
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
  try {
    return await fn();
  } finally {
    await Deno.remove(lock, { recursive: true }).catch(() => {});
  }
}

/**
 * Make sure the binaries for the pinned versions exist in the cache; build them if not.
 * Needs `go` (1.26+) and network access to the Go module proxy on the first run.
 */
export async function ensureBuilt(
  opts: { log?: (line: string) => void } = {},
): Promise<BuildResult> {
  const log = opts.log ?? ((l: string) => console.error(l));
  const t0 = performance.now();
  const dir = await cacheDir();
  const result = (built: boolean): BuildResult => ({
    binDir: `${dir}/bin`,
    assetsDir: `${dir}/assets`,
    built,
    seconds: (performance.now() - t0) / 1000,
  });
  if (await complete(dir)) {
    if (await crdsCurrent(dir)) return result(false);
    // Built before the logs CRD was used: copy the YAML again (module cache only, no build).
    return await withLock(dir, log, async () => {
      if (!await crdsCurrent(dir)) {
        await copyAssets(await goListDir(`${HERE}build/kwok`, "sigs.k8s.io/kwok"), `${dir}/assets`);
        log(`[build] refreshed kwok YAML in ${dir}/assets`);
      }
      return result(false);
    });
  }
  return await withLock(dir, log, async () => {
    if (await complete(dir)) return result(false);
    log(`[build] building control plane into ${dir} (first time: several minutes on 2 cores)`);
    const tmp = `${dir}/bin.tmp`;
    await Deno.mkdir(tmp, { recursive: true });
    const k8s = `${HERE}build/k8s`;
    const kwok = `${HERE}build/kwok`;
    await goBuild(
      k8s,
      [
        "-o",
        `${tmp}/`,
        "k8s.io/kubernetes/cmd/kube-apiserver",
        "k8s.io/kubernetes/cmd/kube-controller-manager",
        "k8s.io/kubernetes/cmd/kube-scheduler",
        "k8s.io/kubernetes/cmd/kubectl",
      ],
      "kubernetes",
      log,
      await versionLdflags(k8s),
    );
    await goBuild(k8s, ["-o", `${tmp}/etcd`, "go.etcd.io/etcd/server/v3"], "etcd", log);
    await goBuild(kwok, ["-o", `${tmp}/kwok`, "sigs.k8s.io/kwok/cmd/kwok"], "kwok", log);
    await copyAssets(await goListDir(kwok, "sigs.k8s.io/kwok"), `${dir}/assets`);
    await Deno.remove(`${dir}/bin`, { recursive: true }).catch(() => {});
    await Deno.rename(tmp, `${dir}/bin`);
    const r = result(true);
    log(`[build] control plane built in ${r.seconds.toFixed(0)} s`);
    return r;
  });
}

if (import.meta.main) {
  const r = await ensureBuilt({ log: (l) => console.log(l) });
  console.log(
    `${r.binDir} (${r.built ? `built in ${r.seconds.toFixed(0)} s` : "already built"})`,
  );
}
