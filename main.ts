/**
 * kubectl-relay: a drop-in replacement for `kubectl port-forward` with UDP, Services and
 * workloads that survive rolling updates, and hostnames resolved inside the cluster.
 *
 * Run as `kubectl relay …` (via the `kubectl-relay` launcher on PATH) or
 * `deno run -A --unstable-net main.ts …`.
 * @module
 */

if (import.meta.main) {
  if (Deno.args[0] === "__credentials") {
    // The credentials helper process (see src/kube/credentials.ts). The Kubernetes client's
    // dependencies trigger Node deprecation warnings that mean nothing to a user; silence them
    // before that code is loaded. (Only here: node:process costs ~20 ms of every start.)
    const { default: process } = await import("node:process");
    process.noDeprecation = true;
    const { credentialsMain } = await import("./src/kube/credentials.ts");
    await credentialsMain(Deno.args.slice(1));
    Deno.exit(0);
  }
  const { run } = await import("./src/cli/run.ts");
  Deno.exit(await run(Deno.args));
}
