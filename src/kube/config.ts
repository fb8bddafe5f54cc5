import { KubeConfig } from "npm:@kubernetes/client-node@1.4.0";
import type { Flags } from "../cli/flags.ts";
import { UsageError } from "../cli/errors.ts";
import { InsecureTlsRequired, tlsVerificationDisabled } from "./insecure.ts";

/** Everything needed to talk to the apiserver of the chosen context. */
export interface KubeAccess {
  /** Base URL of the apiserver, without a trailing slash. */
  server: string;
  /** Namespace of the context (or `-n`), `default` if none. */
  namespace: string;
  contextName: string;
  /** TLS settings (CA, client certificate) for `fetch` and `WebSocket`. */
  httpClient: Deno.HttpClient;
  /** Fresh authentication and impersonation headers (exec plugins may refresh tokens). */
  headers(): Promise<Headers>;
  /** 0 = no timeout. */
  requestTimeoutMs: number;
  /** True when TLS verification is off (`--insecure-skip-tls-verify`). */
  insecure: boolean;
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
export function loadKubeConfig(flags: Flags): KubeConfig {
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
function applyOverrides(kc: KubeConfig, flags: Flags): KubeConfig {
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

/** Builds the apiserver access (TLS client + header source) for the current context. */
export async function kubeAccess(kc: KubeConfig, flags: Flags): Promise<KubeAccess> {
  const cluster = kc.getCurrentCluster()!;
  const ctx = kc.getContextObject(kc.getCurrentContext());
  const opts: { headers: Record<string, string>; ca?: unknown; cert?: unknown; key?: unknown } = {
    headers: {},
  };
  try {
    await kc.applyToHTTPSOptions(opts as never);
  } catch (e) {
    throw new UsageError(`getting credentials: ${(e as Error).message.split("\n")[0]}`);
  }
  if (cluster.skipTLSVerify && !tlsVerificationDisabled()) {
    throw new InsecureTlsRequired(new URL(cluster.server).hostname.replace(/^\[|\]$/g, ""));
  }
  const ca = toText(opts.ca);
  const cert = toText(opts.cert);
  const key = toText(opts.key);
  let httpClient: Deno.HttpClient;
  try {
    httpClient = Deno.createHttpClient({
      ...(ca ? { caCerts: [ca] } : {}),
      ...(cert && key ? { cert, key } : {}),
      http2: false,
    });
  } catch (e) {
    throw new UsageError(`invalid TLS material in kubeconfig: ${(e as Error).message}`);
  }
  return {
    server: cluster.server.replace(/\/+$/, ""),
    namespace: flags.namespace || ctx?.namespace || "default",
    contextName: kc.getCurrentContext(),
    httpClient,
    requestTimeoutMs: flags.requestTimeoutMs,
    insecure: !!cluster.skipTLSVerify,
    async headers() {
      const o: { headers: Record<string, string> } = { headers: {} };
      await kc.applyToHTTPSOptions(o as never);
      const h = new Headers(o.headers);
      if (flags.as) h.set("Impersonate-User", flags.as);
      for (const g of flags.asGroups) h.append("Impersonate-Group", g);
      return h;
    },
  };
}
