/**
 * Memory cgroups for agent pods, as a kubelet (through containerd/runc) gives each container: a
 * cgroup per pod with `resources.limits.memory` as its hard limit (no swap on top), the kernel's
 * OOM kill counted, the peak usage read when the container ends, and the cgroup removed then.
 *
 * Works with the cgroup v1 memory controller (`memory.limit_in_bytes`, `memory.memsw.limit_in_bytes`,
 * `memory.oom_control`, `memory.max_usage_in_bytes`) and with cgroup v2 (`memory.max`,
 * `memory.swap.max`, `memory.events`, `memory.peak`), whichever the machine mounts (see
 * {@link detectMemoryController}). Layout: `<mount>/kubectl-relay/<runtime id>/<ns>_<pod>/`.
 *
 * @module
 */

/** Where the memory controller is mounted. */
export interface MemoryController {
  version: 1 | 2;
  /** Mount point of the hierarchy holding the memory controller (e.g. /sys/fs/cgroup/memory). */
  mount: string;
}

/** Directory (under the controller's mount) that holds every runtime's cgroups. */
export const CGROUP_PARENT = "kubectl-relay";

/**
 * Find the memory controller from `/proc/self/mountinfo` text: a cgroup2 mount whose
 * `cgroup.controllers` lists `memory` (pure v2 hosts), else a cgroup v1 mount with the `memory`
 * option. undefined if neither exists.
 */
export function detectMemoryController(
  mountinfo = Deno.readTextFileSync("/proc/self/mountinfo"),
  readFile: (path: string) => string = Deno.readTextFileSync,
): MemoryController | undefined {
  const mounts: { point: string; fstype: string; superOpts: string[] }[] = [];
  for (const line of mountinfo.split("\n")) {
    const sep = line.indexOf(" - ");
    if (sep < 0) continue;
    const point = line.slice(0, sep).split(" ")[4]?.replace(/\\040/g, " ");
    const [fstype, , superOpts = ""] = line.slice(sep + 3).split(" ");
    if (point) mounts.push({ point, fstype, superOpts: superOpts.split(",") });
  }
  for (const m of mounts) {
    if (m.fstype !== "cgroup2") continue;
    let controllers = "";
    try {
      controllers = readFile(`${m.point}/cgroup.controllers`);
    } catch {
      continue;
    }
    if (controllers.split(/\s+/).includes("memory")) return { version: 2, mount: m.point };
  }
  const v1 = mounts.find((m) => m.fstype === "cgroup" && m.superOpts.includes("memory"));
  return v1 ? { version: 1, mount: v1.point } : undefined;
}

const UNITS: Record<string, number> = {
  "": 1,
  m: 1e-3,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
};

/**
 * Bytes of a Kubernetes memory quantity (`128Mi`, `1G`, `134217728`, `1e9`, `0.5Gi`), rounded up
 * as `resource.Quantity.Value()` does. Throws on a malformed quantity.
 */
export function parseMemoryQuantity(q: string | number): number {
  if (typeof q === "number") return Math.ceil(q);
  const m = /^\+?(\d+(?:\.\d*)?|\.\d+)(?:[eE]([+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E))?$/
    .exec(q.trim());
  if (!m) throw new Error(`invalid memory quantity ${JSON.stringify(q)}`);
  const n = Number(m[1]) * (m[2] !== undefined ? 10 ** Number(m[2]) : UNITS[m[3] ?? ""]);
  return Math.ceil(n);
}

/** What a pod's memory cgroup recorded. */
export interface MemoryStats {
  /** Current usage (bytes). */
  usage: number;
  /** Peak usage (bytes), if the kernel records it (v1 always; v2 since Linux 5.19). */
  peak?: number;
  /** The hard limit in bytes (undefined = unlimited). */
  limit?: number;
  /** Processes the kernel OOM-killed in this cgroup. */
  oomKills: number;
}

function readNum(path: string): number | undefined {
  try {
    const t = Deno.readTextFileSync(path).trim();
    if (t === "max") return undefined;
    const n = Number(t);
    return Number.isFinite(n) ? n : undefined;
  } catch {
    return undefined;
  }
}

function readKeyed(path: string, key: string): number | undefined {
  try {
    const m = new RegExp(`^${key} (\\d+)$`, "m").exec(Deno.readTextFileSync(path));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** v1 reports "no limit" as a huge page-aligned number. */
const V1_UNLIMITED = 2 ** 62;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One pod's memory cgroup. */
export class PodCgroup {
  constructor(readonly controller: MemoryController, readonly dir: string) {}

  /** File a process writes its pid to in order to join (before it execs the container). */
  get procsFile(): string {
    return `${this.dir}/cgroup.procs`;
  }

  /** Pids in the cgroup ([] if it is gone). */
  pids(): number[] {
    try {
      return Deno.readTextFileSync(this.procsFile).split("\n").filter((l) => l).map(Number);
    } catch {
      return [];
    }
  }

  /** Current counters (undefined if the cgroup is gone). */
  stats(): MemoryStats | undefined {
    const f = (name: string) => `${this.dir}/${name}`;
    if (this.controller.version === 1) {
      const usage = readNum(f("memory.usage_in_bytes"));
      if (usage === undefined) return undefined;
      const limit = readNum(f("memory.limit_in_bytes"));
      return {
        usage,
        peak: readNum(f("memory.max_usage_in_bytes")),
        limit: limit !== undefined && limit < V1_UNLIMITED ? limit : undefined,
        oomKills: readKeyed(f("memory.oom_control"), "oom_kill") ?? 0,
      };
    }
    const usage = readNum(f("memory.current"));
    if (usage === undefined) return undefined;
    return {
      usage,
      peak: readNum(f("memory.peak")),
      limit: readNum(f("memory.max")),
      oomKills: readKeyed(f("memory.events"), "oom_kill") ?? 0,
    };
  }

  /**
   * Remove the cgroup (its processes must have exited; retries while the kernel still counts an
   * exiting one). Returns false if it could not be removed within `timeoutMs`.
   */
  async remove(timeoutMs = 5000): Promise<boolean> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      try {
        await Deno.remove(this.dir);
        return true;
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) return true;
        if (Date.now() > end) return false;
        await sleep(50);
      }
    }
  }
}

/** Make `dir` (and its parents below `mount`) exist; on v2 enable the memory controller on the way. */
async function makeDirs(c: MemoryController, dir: string): Promise<void> {
  const rel = dir.slice(c.mount.length).split("/").filter((p) => p);
  let cur = c.mount;
  for (const part of rel) {
    if (c.version === 2) {
      // A child gets memory.* files only if its parent delegates the controller.
      const ctl = `${cur}/cgroup.subtree_control`;
      const enabled = (() => {
        try {
          return Deno.readTextFileSync(ctl).split(/\s+/).includes("memory");
        } catch {
          return false;
        }
      })();
      if (!enabled) await Deno.writeTextFile(ctl, "+memory");
    }
    cur = `${cur}/${part}`;
    await Deno.mkdir(cur).catch((e) => {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
    });
  }
}

/** The memory cgroups of one runtime: `<mount>/kubectl-relay/<id>/`. */
export class MemoryCgroups {
  /** This runtime's directory. */
  readonly dir: string;

  constructor(readonly controller: MemoryController, readonly id: string) {
    if (!/^[A-Za-z0-9_.-]+$/.test(id) || id === "." || id === "..") {
      throw new Error(`bad cgroup id ${id}`);
    }
    this.dir = `${controller.mount}/${CGROUP_PARENT}/${id}`;
  }

  /**
   * Create the cgroup `<ns>_<pod>` with a hard limit (bytes; undefined = unlimited), swap not
   * allowed on top of it. A leftover of the same name (an earlier pod, processes gone) is replaced.
   */
  async create(name: string, limit: number | undefined): Promise<PodCgroup> {
    if (!/^[A-Za-z0-9_.-]+$/.test(name)) throw new Error(`bad cgroup name ${name}`);
    const cg = new PodCgroup(this.controller, `${this.dir}/${name}`);
    if (exists(cg.dir)) {
      if (cg.pids().length) throw new Error(`cgroup ${cg.dir} still has processes ${cg.pids()}`);
      await cg.remove();
    }
    await makeDirs(this.controller, cg.dir);
    const w = (file: string, value: string) => Deno.writeTextFile(`${cg.dir}/${file}`, value);
    if (this.controller.version === 1) {
      if (limit !== undefined) {
        await w("memory.limit_in_bytes", String(limit));
        // memory+swap = memory: swap cannot hide usage above the limit (kubelet does the same).
        if (exists(`${cg.dir}/memory.memsw.limit_in_bytes`)) {
          await w("memory.memsw.limit_in_bytes", String(limit));
        }
      }
    } else {
      await w("memory.max", limit === undefined ? "max" : String(limit));
      if (exists(`${cg.dir}/memory.swap.max`)) await w("memory.swap.max", "0");
      if (exists(`${cg.dir}/memory.oom.group`)) await w("memory.oom.group", "1");
    }
    return cg;
  }

  /** Pod cgroups that exist now (names). */
  list(): string[] {
    try {
      return [...Deno.readDirSync(this.dir)].filter((e) => e.isDirectory).map((e) => e.name);
    } catch {
      return [];
    }
  }

  /** Remove every pod cgroup whose processes are gone, then this runtime's dir. */
  async removeAll(): Promise<string[]> {
    const left: string[] = [];
    for (const name of this.list()) {
      const cg = new PodCgroup(this.controller, `${this.dir}/${name}`);
      if (cg.pids().length || !(await cg.remove(1000))) left.push(cg.dir);
    }
    if (left.length === 0) {
      await Deno.remove(this.dir).catch(() => {});
      // The shared parent goes once the last runtime's dir is gone (busy otherwise: fine).
      await Deno.remove(`${this.controller.mount}/${CGROUP_PARENT}`).catch(() => {});
    }
    return left;
  }
}

/**
 * The cgroup id of the runtime whose state dir is `stateDir`: its base name plus a short hash of
 * the full path (two clusters never share a state dir while running).
 */
export async function runtimeCgroupId(stateDir: string): Promise<string> {
  const abs = stateDir.replace(/\/+$/, "");
  const base = (abs.split("/").pop() || "root").replace(/[^A-Za-z0-9_.-]/g, "_");
  const d = new Uint8Array(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode(abs)),
  );
  const h = Array.from(d.subarray(0, 4), (b) => b.toString(16).padStart(2, "0")).join("");
  return `${base}-${h}`;
}

/**
 * The runtime's cgroup directory for `stateDir` on this machine (undefined without a memory
 * controller). For leak checks: it must not exist after the runtime stopped.
 */
export async function runtimeCgroupDir(stateDir: string): Promise<string | undefined> {
  const c = detectMemoryController();
  return c ? new MemoryCgroups(c, await runtimeCgroupId(stateDir)).dir : undefined;
}
