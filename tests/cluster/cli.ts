/**
 * `deno task cluster <command>` — start, stop and inspect the loopback test cluster by hand.
 *
 * ```
 * deno task cluster build                       # build/cache the binaries only
 * deno task cluster up [--state-dir DIR]        # start; stays in the foreground until Ctrl-C
 * deno task cluster up --detach [--state-dir DIR]  # start in the background (a detached owner
 *                                             # process), print the kubeconfig path, exit
 * deno task cluster status [--state-dir DIR]    # components and readiness (exit 1 if down)
 * deno task cluster down [--state-dir DIR]      # stop a (detached) cluster
 * ```
 * Default state dir: `/tmp/kubectl-relay-cluster`. The last line printed by `up` is the admin
 * kubeconfig path (`export KUBECONFIG=$(...)`-friendly); progress goes to stderr.
 *
 * @module
 */

import { ensureBuilt } from "./build.ts";
import { attachState, type ClusterState, startCluster } from "./cluster.ts";
import { isAlive, logTail, spawnProc } from "./proc.ts";

const DEFAULT_DIR = "/tmp/kubectl-relay-cluster";
const CLI = new URL(import.meta.url).pathname;
const REPO = new URL("../../", import.meta.url).pathname;

function usage(): never {
  console.error(
    "usage: deno task cluster build | up [--detach] [--state-dir DIR] | status [--state-dir DIR] | down [--state-dir DIR]",
  );
  Deno.exit(2);
}

function readState(dir: string): ClusterState | null {
  try {
    return JSON.parse(Deno.readTextFileSync(`${dir}/state.json`));
  } catch {
    return null;
  }
}

function running(st: ClusterState | null): boolean {
  return st !== null && st.procs.some((p) => isAlive(p.pid));
}

async function main(args: string[]): Promise<number> {
  const cmd = args[0];
  let dir = DEFAULT_DIR;
  let detach = false;
  let keepDir = false;
  for (let i = 1; i < args.length; i++) {
    if (args[i] === "--state-dir" && i + 1 < args.length) dir = args[++i];
    else if (args[i].startsWith("--state-dir=")) dir = args[i].slice(12);
    else if (args[i] === "--detach") detach = true;
    else if (args[i] === "--keep-dir") keepDir = true; // internal: used by --detach
    else usage();
  }
  const log = (l: string) => console.error(l);
  switch (cmd) {
    case "build": {
      const r = await ensureBuilt({ log });
      console.log(r.binDir);
      return 0;
    }
    case "up": {
      const old = readState(dir);
      if (running(old)) {
        console.error(`error: a cluster is already running in ${dir} (deno task cluster down)`);
        return 1;
      }
      if (!keepDir) {
        await Deno.remove(dir, { recursive: true }).catch(() => {});
        await Deno.mkdir(`${dir}/logs`, { recursive: true });
      }
      if (detach) return await detached(dir, log);
      // Catch signals from the start, so an early Ctrl-C still stops what was started.
      let stopRequested: () => void = () => {};
      const stopSignal = new Promise<void>((r) => stopRequested = r);
      Deno.addSignalListener("SIGINT", () => stopRequested());
      Deno.addSignalListener("SIGTERM", () => stopRequested());
      const c = await startCluster({ log, dir, mode: "child" });
      console.error(`export KUBECONFIG=${c.kubeconfig}`);
      console.log(c.kubeconfig);
      console.error("[cluster] running; Ctrl-C to stop");
      await stopSignal;
      await c.stop();
      await Deno.remove(`${dir}/state.json`).catch(() => {});
      return 0;
    }
    case "down": {
      const st = readState(dir);
      if (st === null) {
        console.error(`no cluster state in ${dir}`);
        return 0;
      }
      if (st.ownerMode === "child" && st.ownerPid !== Deno.pid && isAlive(st.ownerPid)) {
        // The owner stops (and reaps) its components on SIGTERM.
        Deno.kill(st.ownerPid, "SIGTERM");
        const end = Date.now() + 30000;
        while (isAlive(st.ownerPid) && Date.now() < end) await sleep(100);
      }
      // Kills whatever is left and checks that no process or port remains.
      const c = attachState(st, { log });
      await c.stop();
      await Deno.remove(`${dir}/state.json`).catch(() => {});
      return 0;
    }
    case "status": {
      const st = readState(dir);
      if (st === null) {
        console.log(`no cluster in ${dir}`);
        return 1;
      }
      let ok = true;
      for (const p of st.procs) {
        const alive = isAlive(p.pid);
        ok &&= alive;
        console.log(
          `${p.spec.name.padEnd(24)} pid ${String(p.pid).padEnd(8)} ${alive ? "running" : "DOWN"}`,
        );
      }
      console.log(`server      ${st.server}`);
      console.log(`kubeconfig  ${st.kubeconfig}`);
      console.log(`podCIDR     ${st.podCIDR}   serviceCIDR ${st.serviceCIDR}`);
      console.log(`started in  ${st.startSeconds.toFixed(1)} s`);
      return ok ? 0 : 1;
    }
    default:
      usage();
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Start a foreground `up` as a detached owner process (it owns and reaps the components),
 * wait until its cluster is ready, print the kubeconfig path.
 */
async function detached(dir: string, log: (l: string) => void): Promise<number> {
  await ensureBuilt({ log });
  const ownerLog = `${dir}/logs/owner.log`;
  const owner = await spawnProc({
    name: "owner",
    bin: Deno.execPath(),
    args: ["run", "-A", CLI, "up", "--state-dir", dir, "--keep-dir"],
    cwd: REPO,
    log: ownerLog,
  }, "orphan");
  const end = Date.now() + 180000;
  while (Date.now() < end) {
    const st = readState(dir);
    if (st && st.ownerPid === owner.pid && st.startSeconds > 0) {
      console.error(`[cluster] ready in ${st.startSeconds.toFixed(1)} s (owner pid ${owner.pid})`);
      console.error(`export KUBECONFIG=${st.kubeconfig}`);
      console.log(st.kubeconfig);
      return 0;
    }
    if (!isAlive(owner.pid)) break;
    await sleep(100);
  }
  console.error(`error: the cluster did not start; ${ownerLog}:\n${logTail(ownerLog, 40)}`);
  if (isAlive(owner.pid)) Deno.kill(owner.pid, "SIGTERM");
  return 1;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
