/**
 * `deno task cluster <command>` — start, stop and inspect the loopback test cluster by hand.
 *
 * ```
 * deno task cluster build                       # build/cache the binaries only
 * deno task cluster up [--state-dir DIR]        # start; stays in the foreground until Ctrl-C
 * deno task cluster up --detach [--state-dir DIR]  # start, print the kubeconfig path, exit
 * deno task cluster status [--state-dir DIR]    # components and readiness (exit 1 if down)
 * deno task cluster down [--state-dir DIR]      # stop a (detached) cluster
 * ```
 * Default state dir: `/tmp/kubectl-relay-cluster`. The last line printed by `up` is the admin
 * kubeconfig path (`export KUBECONFIG=$(...)`-friendly); progress goes to stderr.
 *
 * @module
 */

import { ensureBuilt } from "./build.ts";
import { attachCluster, type ClusterState, startCluster } from "./cluster.ts";
import { isAlive } from "./proc.ts";

const DEFAULT_DIR = "/tmp/kubectl-relay-cluster";

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
  for (let i = 1; i < args.length; i++) {
    if (args[i] === "--state-dir" && i + 1 < args.length) dir = args[++i];
    else if (args[i].startsWith("--state-dir=")) dir = args[i].slice(12);
    else if (args[i] === "--detach") detach = true;
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
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      await Deno.mkdir(dir, { recursive: true });
      const c = await startCluster({ log, dir, mode: detach ? "orphan" : "child" });
      console.error(`export KUBECONFIG=${c.kubeconfig}`);
      console.log(c.kubeconfig);
      if (detach) return 0;
      console.error("[cluster] running; Ctrl-C to stop");
      await new Promise<void>((resolve) => {
        const done = () => resolve();
        Deno.addSignalListener("SIGINT", done);
        Deno.addSignalListener("SIGTERM", done);
      });
      await c.stop();
      return 0;
    }
    case "down": {
      const st = readState(dir);
      if (st === null) {
        console.error(`no cluster state in ${dir}`);
        return 0;
      }
      const c = await attachCluster(`${dir}/state.json`, { log });
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

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
