/**
 * kubectl-relay: a drop-in replacement for `kubectl port-forward` with UDP, Services and
 * workloads that survive rolling updates, and hostnames resolved inside the cluster.
 *
 * Run as `kubectl relay …` (via the `kubectl-relay` launcher on PATH) or
 * `deno run -A --unstable-net main.ts …`.
 * @module
 */
import { run } from "./src/cli/run.ts";

if (import.meta.main) {
  Deno.exit(await run(Deno.args));
}
