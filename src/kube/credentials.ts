/**
 * Kubeconfig loading and authentication, done with `@kubernetes/client-node` (every auth method:
 * client certificates, tokens, exec plugins, OIDC). The result is plain data.
 *
 * The client runs this in a short-lived helper process (`credentialsMain`), so the long-running
 * relay never keeps the Kubernetes client library in memory (~80 MB of resident memory).
 *
 * @module
 */
import { KubeConfig } from "npm:@kubernetes/client-node@1.4.0";
import { UsageError } from "../errors.ts";
import { defaultKubeFlags, type KubeFlags } from "./flags.ts";

/** What the relay needs to reach the apiserver as the user. */
export interface Credentials {
  /** Base URL of the apiserver, without a trailing slash. */
  server: string;
  /** Namespace of the context (or `-n`), `default` if none. */
  namespace: string;
  contextName: string;
  /** PEM texts. */
  ca?: string;
  cert?: string;
  key?: string;
  /** Authentication headers (e.g. `Authorization: Bearer …`). */
  headers: Record<string, string>;
  /** TLS verification must be skipped (`--insecure-skip-tls-verify` or the kubeconfig says so). */
  insecure: boolean;
  /** Tokens come from an exec plugin or auth provider and expire: fetch them again from time to time. */
  refreshable: boolean;
}

type Named = { name: string };

function firstByName<T extends Named>(lists: T[][]): T[] {
  const seen = new Map<string, T>();
  for (const list of lists) {
    for (const item of list) if (!seen.has(item.name)) seen.set(item.name, item);
  }
  return [...seen.values()];
}

/** Loads kubeconfig files as kubectl does: `--kubeconfig`, else every file in `KUBECONFIG` (first wins), else ~/.kube/config. */
export function loadKubeConfig(flags: KubeFlags): KubeConfig {
  const files: string[] = [];
  if (flags.kubeconfig) {
    files.push(flags.kubeconfig);
  } else if (Deno.env.get("KUBECONFIG")) {
    const sep = Deno.build.os === "windows" ? ";" : ":";
    files.push(...Deno.env.get("KUBECONFIG")!.split(sep).filter((f) => f !== ""));
  } else {
    const home = Deno.env.get("HOME") ?? Deno.env.get("USERPROFILE") ?? "";
    files.push(`${home}/.kube/config`);
  }
  const loaded: KubeConfig[] = [];
  for (const file of files) {
    const kc = new KubeConfig();
    try {
      kc.loadFromFile(file);
    } catch (e) {
      const missing = e instanceof Error && /ENOENT|No such file/.test(e.message);
      if (missing && !flags.kubeconfig) continue;
      throw new UsageError(
        `error loading config file "${file}": ${(e as Error).message.split("\n")[0]}`,
      );
    }
    loaded.push(kc);
  }
  if (loaded.length === 0 && !flags.server) {
    throw new UsageError(
      "no configuration has been provided, try setting KUBECONFIG or passing --kubeconfig",
    );
  }
  const merged = new KubeConfig();
  merged.loadFromOptions({
    clusters: firstByName(loaded.map((k) => k.getClusters())),
    users: firstByName(loaded.map((k) => k.getUsers())),
    contexts: firstByName(loaded.map((k) => k.getContexts())),
    currentContext: loaded.map((k) => k.getCurrentContext()).find((c) => c) ?? "",
  });
  return applyOverrides(merged, flags);
}

/** Applies `--context`, `--cluster`, `--user`, `--server`, `--token`, TLS flags to a loaded config. */
function applyOverrides(kc: KubeConfig, flags: KubeFlags): KubeConfig {
  const contextName = flags.context ?? kc.getCurrentContext();
  if (flags.context && !kc.getContextObject(flags.context)) {
    throw new UsageError(`context "${flags.context}" does not exist`);
  }
  const ctx = kc.getContextObject(contextName) ??
    { name: contextName || "relay", cluster: "", user: "" };
  const clusterName = flags.cluster ?? ctx.cluster;
  const userName = flags.user ?? ctx.user;
  if (flags.cluster && !kc.getCluster(flags.cluster)) {
    throw new UsageError(`cluster "${flags.cluster}" does not exist`);
  }
  if (flags.user && !kc.getUser(flags.user)) {
    throw new UsageError(`user "${flags.user}" does not exist`);
  }
  const cluster = {
    ...(kc.getCluster(clusterName) ?? { name: clusterName || "relay", server: "" }),
  };
  const user = { ...(kc.getUser(userName) ?? { name: userName || "relay" }) };
  if (flags.server) Object.assign(cluster, { server: flags.server });
  if (flags.insecureSkipTlsVerify) {
    Object.assign(cluster, { skipTLSVerify: true, caData: undefined, caFile: undefined });
  }
  if (flags.certificateAuthority) {
    Object.assign(cluster, { caFile: flags.certificateAuthority, caData: undefined });
  }
  if (flags.token) Object.assign(user, { token: flags.token });
  if (flags.clientCertificate) {
    Object.assign(user, { certFile: flags.clientCertificate, certData: undefined });
  }
  if (flags.clientKey) Object.assign(user, { keyFile: flags.clientKey, keyData: undefined });
  if (!cluster.server) {
    throw new UsageError(
      contextName
        ? `context "${contextName}" has no cluster server; check your kubeconfig`
        : "no current context is set; use --context or set current-context in your kubeconfig",
    );
  }
  const out = new KubeConfig();
  out.loadFromOptions({
    clusters: [cluster],
    users: [user],
    contexts: [{ ...ctx, name: ctx.name || "relay", cluster: cluster.name, user: user.name }],
    currentContext: ctx.name || "relay",
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
  return {
    server: cluster.server.replace(/\/+$/, ""),
    namespace: flags.namespace || ctx?.namespace || "default",
    contextName: kc.getCurrentContext(),
    ca: toText(opts.ca),
    cert: toText(opts.cert),
    key: toText(opts.key),
    headers: opts.headers,
    insecure: !!cluster.skipTLSVerify,
    refreshable: !!(user?.exec || user?.authProvider),
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
