/**
 * What a kubelet enforces on an agent pod's process, applied to the local `deno run agent.ts`:
 * its own memory cgroup with the container's `resources.limits.memory` (joined before `deno` is
 * exec'd), the uid/gid/groups/capabilities of its securityContext (`setpriv`), an environment
 * made only of the container's `env` (plus PATH/HOME and a Deno cache the uid can use), an OOM kill
 * reported as `OOMKilled` (exit code 137), the peak memory recorded in
 * `<state-dir>/agents/<ns>_<pod>.peak`, and the cgroup removed when the container ends.
 *
 * @module
 */

import {
  detectMemoryController,
  MemoryCgroups,
  type MemoryController,
  type MemoryStats,
  parseMemoryQuantity,
  PodCgroup,
  runtimeCgroupId,
} from "./cgroup.ts";
import type { V1Pod } from "./kube.ts";
import { AGENT_IMAGE_USER, type ImageUser, processIdentity, setprivArgs } from "./pod_security.ts";

type V1Container = NonNullable<V1Pod["spec"]>["containers"][number];

/** PATH of a container whose image sets none (containerd's default). */
export const CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** Default root of the per-uid Deno caches (must be reachable by any uid: under /tmp). */
export const DENO_DIR_ROOT = "/tmp/kubectl-relay-agent-deno";

/** Options for {@link AgentSandbox.create}. */
export interface AgentSandboxOptions {
  /** Runtime state dir (cgroup id, `agents/*.peak`). */
  stateDir: string;
  log: (line: string) => void;
  /** Memory controller (default: detected; null: none, so agent pods cannot start). */
  controller?: MemoryController | null;
  /** Where the per-uid Deno caches live (default {@link DENO_DIR_ROOT}). */
  denoDirRoot?: string;
  /** User of the agent image when the pod names none (default {@link AGENT_IMAGE_USER}). */
  imageUser?: ImageUser;
}

/** How an agent container ended, as its pod status shows it. */
export interface AgentExit {
  exitCode: number;
  /** `OOMKilled` if the kernel OOM-killed a process of the container; else undefined. */
  reason?: string;
}

/** One agent container's launch: command wrapper, environment, and what happens at its end. */
export interface AgentLaunch {
  /** The pod's memory cgroup. */
  readonly cgroup: PodCgroup;
  /** Hard memory limit in bytes (undefined: the container has none). */
  readonly limit?: number;
  /** uid and gid the process runs as. */
  readonly uid: number;
  readonly gid: number;
  /** The complete environment of the process (spawn with clearEnv). */
  readonly env: Record<string, string>;
  /**
   * The command line that joins the cgroup as root, drops to the pod's identity and execs
   * `argv` (same pid throughout: `sh` and `setpriv` exec).
   */
  wrap(argv: string[]): string[];
  /** The process exited by itself: its pod-status exit code and reason. Releases the cgroup. */
  exited(status: Deno.CommandStatus): Promise<AgentExit>;
  /** Record the peak (`<base>.peak`) and remove the cgroup (idempotent). */
  release(): Promise<MemoryStats | undefined>;
}

const MiB = (n: number | undefined) => n === undefined ? "?" : (n / 2 ** 20).toFixed(1);

/** Environment variables from the container's `env` (literal values and pod fieldRefs). */
export function containerEnv(
  pod: V1Pod,
  container: V1Container | undefined,
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of container?.env ?? []) {
    if (e.value !== undefined || !e.valueFrom) {
      // $(VAR) refers to an earlier variable (kept as is if unknown); $$ is a literal $.
      out[e.name] = (e.value ?? "").replace(
        /\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g,
        (m, v) => m === "$$" ? "$" : v in out ? out[v] : m,
      );
      continue;
    }
    const path = e.valueFrom.fieldRef?.fieldPath;
    const fields: Record<string, string | undefined> = {
      "metadata.name": pod.metadata?.name,
      "metadata.namespace": pod.metadata?.namespace,
      "metadata.uid": pod.metadata?.uid,
      "spec.nodeName": pod.spec?.nodeName,
      "spec.serviceAccountName": pod.spec?.serviceAccountName,
      "status.podIP": pod.status?.podIP,
      "status.hostIP": pod.status?.hostIP,
    };
    if (path === undefined || !(path in fields)) {
      throw new Error(
        `env ${e.name}: only literal values and fieldRef ${
          Object.keys(fields).join("/")
        } are supported by the test runtime`,
      );
    }
    out[e.name] = fields[path] ?? "";
  }
  return out;
}

/** The memory limit of the agent container in bytes (the pod-level limit too, if smaller). */
export function memoryLimit(pod: V1Pod, container: V1Container | undefined): number | undefined {
  const q = [
    container?.resources?.limits?.memory,
    (pod.spec as { resources?: { limits?: Record<string, string> } } | undefined)?.resources
      ?.limits?.memory,
  ].filter((x): x is string => x !== undefined).map((x) => parseMemoryQuantity(x));
  return q.length ? Math.min(...q) : undefined;
}

/** Runtime-wide part: the runtime's cgroup dir and the Deno caches. */
export class AgentSandbox {
  readonly #opts: AgentSandboxOptions;
  readonly #unavailable?: string;
  /** The runtime's memory cgroups (undefined if the machine has no memory controller). */
  readonly cgroups?: MemoryCgroups;

  private constructor(opts: AgentSandboxOptions, cgroups?: MemoryCgroups, unavailable?: string) {
    this.#opts = opts;
    this.cgroups = cgroups;
    this.#unavailable = unavailable;
  }

  /**
   * Detect the memory controller and remove leftovers of an earlier runtime with the same state
   * dir. Never throws for a missing controller: agent pods then fail to start, saying why.
   */
  static async create(opts: AgentSandboxOptions): Promise<AgentSandbox> {
    let controller = opts.controller;
    if (controller === undefined) {
      try {
        controller = detectMemoryController() ?? null;
      } catch {
        controller = null;
      }
    }
    if (!controller) {
      const why = "no memory cgroup controller is mounted (cgroup v1 `memory` or cgroup2 with " +
        "`memory` in cgroup.controllers): resources.limits.memory cannot be enforced";
      opts.log(`agent pods cannot start: ${why}`);
      return new AgentSandbox(opts, undefined, why);
    }
    const cgroups = new MemoryCgroups(controller, await runtimeCgroupId(opts.stateDir));
    const left = await cgroups.removeAll();
    if (left.length) opts.log(`leftover agent cgroups with processes: ${left.join(", ")}`);
    opts.log(`agent pods: memory cgroup v${controller.version} under ${cgroups.dir}`);
    return new AgentSandbox(opts, cgroups);
  }

  /** A Deno cache owned by `uid` (mode 0700), shared by that uid's agents across runtimes. */
  async denoDir(uid: number, gid: number): Promise<string> {
    const root = this.#opts.denoDirRoot ?? DENO_DIR_ROOT;
    await Deno.mkdir(root, { recursive: true });
    await Deno.chown(root, 0, 0);
    await Deno.chmod(root, 0o755);
    const dir = `${root}/${uid}`;
    const st = await Deno.lstat(dir).catch(() => undefined);
    if (st && (!st.isDirectory || st.uid !== uid)) await Deno.remove(dir, { recursive: true });
    await Deno.mkdir(dir, { recursive: true });
    await Deno.chown(dir, uid, gid);
    await Deno.chmod(dir, 0o700);
    return dir;
  }

  /**
   * Prepare the agent container of `pod`: create its cgroup `<ns>_<pod>` with the memory limit,
   * resolve its identity and environment. `base` is `<state-dir>/agents/<ns>_<pod>`; while the
   * container runs, `<base>.cgroup` holds the cgroup's path. Throws if the pod cannot run here.
   */
  async prepare(
    pod: V1Pod,
    container: V1Container | undefined,
    base: string,
  ): Promise<AgentLaunch> {
    if (!this.cgroups) throw new Error(this.#unavailable);
    const ns = pod.metadata!.namespace!;
    const name = pod.metadata!.name!;
    const id = processIdentity(pod, container, this.#opts.imageUser ?? AGENT_IMAGE_USER);
    const limit = memoryLimit(pod, container);
    const denoDir = await this.denoDir(id.uid, id.gid);
    const env: Record<string, string> = {
      PATH: CONTAINER_PATH,
      HOME: denoDir,
      HOSTNAME: name,
      NO_COLOR: "1",
      ...containerEnv(pod, container),
      DENO_DIR: denoDir,
    };
    const cgroup = await this.cgroups.create(`${ns}_${name}`, limit);
    await Deno.writeTextFile(`${base}.cgroup`, `${cgroup.dir}\n`);
    await Deno.remove(`${base}.peak`).catch(() => {});
    const log = this.#opts.log;
    let released: Promise<MemoryStats | undefined> | undefined;
    const release = () =>
      released ??= (async () => {
        const st = cgroup.stats();
        if (st?.peak !== undefined) await Deno.writeTextFile(`${base}.peak`, `${st.peak}\n`);
        if (!(await cgroup.remove())) log(`agent ${ns}/${name}: cgroup ${cgroup.dir} not removed`);
        await Deno.remove(`${base}.cgroup`).catch(() => {});
        log(
          `agent ${ns}/${name}: memory peak ${MiB(st?.peak)} MiB, limit ${
            MiB(st?.limit)
          } MiB, oom kills ${st?.oomKills ?? "?"}`,
        );
        return st;
      })();
    return {
      cgroup,
      limit,
      uid: id.uid,
      gid: id.gid,
      env,
      wrap: (argv) => [
        "sh",
        "-c",
        'echo $$ > "$0" && unset PWD && exec "$@"',
        cgroup.procsFile,
        "setpriv",
        ...setprivArgs(id),
        "--",
        ...argv,
      ],
      exited: async (status) => {
        const st = await release();
        return (st?.oomKills ?? 0) > 0
          ? { exitCode: status.code, reason: "OOMKilled" }
          : { exitCode: status.code };
      },
      release,
    };
  }

  /** Remove every pod cgroup and the runtime's dir; returns cgroups that still hold processes. */
  async close(): Promise<string[]> {
    return this.cgroups ? await this.cgroups.removeAll() : [];
  }
}

/**
 * What the runtime of `stateDir` left behind after it stopped: its agent cgroups (with the pids
 * still in them) and agent processes named by `<state-dir>/agents/*.pid`. Empty cgroups are
 * removed on the way (they are reported all the same). For the cluster's leak check.
 */
export async function agentLeftovers(stateDir: string): Promise<string[]> {
  const out: string[] = [];
  const controller = (() => {
    try {
      return detectMemoryController();
    } catch {
      return undefined;
    }
  })();
  if (controller) {
    const cgroups = new MemoryCgroups(controller, await runtimeCgroupId(stateDir));
    const pods = cgroups.list();
    let present = pods.length > 0;
    try {
      Deno.statSync(cgroups.dir);
      present = true;
    } catch {
      // gone: fine
    }
    if (present) {
      const desc = pods.map((p) => {
        const pids = new PodCgroup(controller, `${cgroups.dir}/${p}`).pids();
        return pids.length ? `${p} (pids ${pids.join(",")})` : p;
      });
      out.push(`agent cgroup ${cgroups.dir} remains${desc.length ? `: ${desc.join(", ")}` : ""}`);
      await cgroups.removeAll();
    }
  }
  let entries: Deno.DirEntry[] = [];
  try {
    entries = [...Deno.readDirSync(`${stateDir}/agents`)];
  } catch {
    // no agents dir
  }
  for (const e of entries) {
    if (!e.name.endsWith(".pid")) continue;
    const pid = Number(Deno.readTextFileSync(`${stateDir}/agents/${e.name}`).trim());
    let cmdline = "";
    try {
      cmdline = Deno.readTextFileSync(`/proc/${pid}/cmdline`);
    } catch {
      continue; // gone
    }
    if (cmdline.includes("--listen")) {
      out.push(`agent process ${pid} (${e.name}) still running`);
    }
  }
  return out;
}
