/**
 * Kubeconfig loading and authentication with `@kubernetes/client-node` (every auth method:
 * client certificates, tokens, exec plugins, OIDC). The result is plain data.
 *
 * The client runs this in a short-lived helper process (`credentialsMain`), so the long-running
 * relay never keeps the Kubernetes client library in memory (~80 MB of resident memory). It is
 * needed only for exec plugins and auth providers, and to word the errors of a kubeconfig the
 * relay's own reader (kubeconfig.ts) could not use.
 *
 * @module
 */
import { KubeConfig } from "npm:@kubernetes/client-node@1.4.0";
import { UsageError } from "../errors.ts";
import { defaultKubeFlags, type KubeFlags } from "./flags.ts";
import {
  basicAuthorization,
  type Credentials,
  type KcFile,
  needsPlugin,
  selectKubeconfig,
} from "./kubeconfig.ts";

export type { Credentials } from "./kubeconfig.ts";

/** Reads one file with the library (its parsing and its errors). */
function libraryFile(file: string): KcFile {
  const kc = new KubeConfig();
  kc.loadFromFile(file);
  return {
    clusters: kc.getClusters(),
    users: kc.getUsers() as KcFile["users"],
    contexts: kc.getContexts(),
    currentContext: kc.getCurrentContext(),
  };
}

/** Loads kubeconfig files as kubectl does: `--kubeconfig`, else every file in `KUBECONFIG` (first wins), else ~/.kube/config. */
export function loadKubeConfig(flags: KubeFlags): KubeConfig {
  const { cluster, user, context } = selectKubeconfig(flags, libraryFile);
  const out = new KubeConfig();
  out.loadFromOptions({
    clusters: [cluster as Parameters<KubeConfig["addCluster"]>[0]],
    users: [user as Parameters<KubeConfig["addUser"]>[0]],
    contexts: [context],
    currentContext: context.name,
  });
  return out;
}

function toText(v: unknown): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === "string") return v;
  if (v instanceof Uint8Array) return new TextDecoder().decode(v);
  return String(v);
}

/** Loads the kubeconfig and resolves the user's credentials (runs exec plugins, refreshes OIDC). */
export async function loadCredentials(flags: KubeFlags): Promise<Credentials> {
  const kc = loadKubeConfig(flags);
  const cluster = kc.getCurrentCluster()!;
  const user = kc.getCurrentUser();
  const ctx = kc.getContextObject(kc.getCurrentContext());
  const opts: { headers: Record<string, string>; ca?: unknown; cert?: unknown; key?: unknown } = {
    headers: {},
  };
  try {
    await kc.applyToHTTPSOptions(opts as never);
  } catch (e) {
    throw new UsageError(`getting credentials: ${(e as Error).message.split("\n")[0]}`);
  }
  // The library keeps basic auth aside (`opts.auth`); it is a header like any other here.
  const basic = user && !opts.headers.Authorization ? basicAuthorization(user) : undefined;
  if (basic) opts.headers.Authorization = basic;
  return {
    server: cluster.server.replace(/\/+$/, ""),
    namespace: flags.namespace || ctx?.namespace || "default",
    contextName: kc.getCurrentContext(),
    ca: toText(opts.ca),
    cert: toText(opts.cert),
    key: toText(opts.key),
    headers: opts.headers,
    insecure: !!cluster.skipTLSVerify,
    refreshable: !!user && needsPlugin(user),
  };
}

/**
 * The helper process: `args[0]` is the connection flags as JSON (see `fetchCredentials`); prints
 * `{"credentials": …}` or `{"error": …}` as one JSON line.
 */
export async function credentialsMain(args: string[]): Promise<void> {
  let out: { credentials?: Credentials; error?: string; usage?: boolean };
  try {
    const flags: KubeFlags = { ...defaultKubeFlags(), ...JSON.parse(args[0] ?? "{}") };
    out = { credentials: await loadCredentials(flags) };
  } catch (e) {
    out = { error: (e as Error).message, usage: e instanceof UsageError };
  }
  await Deno.stdout.write(new TextEncoder().encode(JSON.stringify(out) + "\n"));
}
