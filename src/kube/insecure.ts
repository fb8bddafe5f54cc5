/**
 * `--insecure-skip-tls-verify` (or `insecure-skip-tls-verify: true` in the kubeconfig).
 *
 * Deno's HTTP client cannot turn certificate verification off per connection; only the runtime
 * flag `--unsafely-ignore-certificate-errors=HOST` can. So when TLS verification must be skipped,
 * a source install (`deno run …/main.ts`, the kubectl-relay launcher) runs itself again with that
 * flag, limited to the apiserver's host. A compiled binary cannot add runtime flags and says so.
 */

import { selfCommand } from "./self.ts";

/** Marks the re-executed child so it does not re-execute again. */
const CHILD_ENV = "KUBECTL_RELAY_INSECURE_CHILD";

/** Thrown by kubeAccess when verification must be skipped and this process cannot do it. */
export class InsecureTlsRequired extends Error {
  readonly host: string;
  constructor(host: string) {
    super(`TLS verification must be skipped for ${host}`);
    this.name = "InsecureTlsRequired";
    this.host = host;
  }
}

/** True in the child started with `--unsafely-ignore-certificate-errors`. */
export function tlsVerificationDisabled(): boolean {
  return Deno.env.get(CHILD_ENV) === "1";
}

/**
 * Runs this program again with certificate checks off for `host`, forwarding SIGINT/SIGTERM;
 * returns its exit code, or undefined when this is a compiled binary (no runtime flags).
 */
export async function rerunInsecure(host: string, argv: string[]): Promise<number | undefined> {
  if (Deno.build.standalone) return undefined;
  const self = selfCommand(
    ["--unstable-net", `--unsafely-ignore-certificate-errors=${host}`],
    argv,
  );
  const child = new Deno.Command(self.cmd, {
    args: self.args,
    env: { [CHILD_ENV]: "1" },
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  const forward = (sig: Deno.Signal) => () => {
    try {
      child.kill(sig);
    } catch {
      // already gone
    }
  };
  const handlers = (["SIGINT", "SIGTERM"] as Deno.Signal[]).map((s) => [s, forward(s)] as const);
  handlers.forEach(([s, h]) => Deno.addSignalListener(s, h));
  const { code } = await child.status;
  handlers.forEach(([s, h]) => Deno.removeSignalListener(s, h));
  return code;
}
