/**
 * Kubeconfig files → the one cluster, user and context a run uses, as kubectl picks them
 * (`--kubeconfig`, `KUBECONFIG` with several files where the first wins, `--context`, `--user`,
 * `--server`, `--token`, TLS flags). Plain data, without the Kubernetes client library: the
 * relay reads static credentials (certificates, tokens, basic auth) in its own process and
 * starts the library's helper process only for exec plugins and auth providers.
 *
 * The file format is read exactly as `@kubernetes/client-node` 1.4.0 reads it (`KubeConfig
 * .loadFromFile`: the same validation, `token-file` read at load time, certificate paths made
 * relative to the file's directory), so both ways select the same cluster, user and context.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import path from "node:path";
import yaml from "npm:js-yaml@4.1.0";
import { UsageError } from "../errors.ts";
import type { KubeFlags } from "./flags.ts";

/** A cluster entry (client-node's `Cluster` shape). */
export interface KcCluster {
  name: string;
  server: string;
  caData?: string;
  caFile?: string;
  skipTLSVerify?: boolean;
  tlsServerName?: string;
  proxyUrl?: string;
}

/** A user entry (client-node's `User` shape). */
export interface KcUser {
  name: string;
  authProvider?: unknown;
  exec?: unknown;
  certData?: string;
  certFile?: string;
  keyData?: string;
  keyFile?: string;
  token?: string;
  username?: string;
  password?: string;
  /** `as:` in the kubeconfig. */
  impersonateUser?: string;
}

/** A context entry (client-node's `Context` shape). */
export interface KcContext {
  name: string;
  cluster: string;
  user?: string;
  namespace?: string;
}

/** The entries of one kubeconfig file. */
export interface KcFile {
  clusters: KcCluster[];
  users: KcUser[];
  contexts: KcContext[];
  currentContext?: string;
}

/** What a run uses: one cluster, user and context (flags applied). */
export interface KcSelection {
  cluster: KcCluster;
  user: KcUser;
  context: KcContext;
}

/** The Credentials a run needs to reach the apiserver as the user. */
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

/** The kubeconfig files to read, as kubectl: `--kubeconfig`, else `KUBECONFIG`, else ~/.kube/config. */
export function kubeconfigFiles(flags: KubeFlags): string[] {
  if (flags.kubeconfig) return [flags.kubeconfig];
  const env = Deno.env.get("KUBECONFIG");
  if (env) {
    const sep = Deno.build.os === "windows" ? ";" : ":";
    return env.split(sep).filter((f) => f !== "");
  }
  const home = Deno.env.get("HOME") ?? Deno.env.get("USERPROFILE") ?? "";
  return [`${home}/.kube/config`];
}

type Named = { name: string };

function firstByName<T extends Named>(lists: T[][]): T[] {
  const seen = new Map<string, T>();
  for (const list of lists) {
    for (const item of list) if (!seen.has(item.name)) seen.set(item.name, item);
  }
  return [...seen.values()];
}

/**
 * Loads every kubeconfig file with `load` (first wins for each name; a missing file named in
 * `KUBECONFIG` is skipped) and applies the flags. User mistakes throw UsageError.
 */
export function selectKubeconfig(flags: KubeFlags, load: (file: string) => KcFile): KcSelection {
  const loaded: KcFile[] = [];
  for (const file of kubeconfigFiles(flags)) {
    try {
      loaded.push(load(file));
    } catch (e) {
      const missing = e instanceof Error && /ENOENT|No such file/.test(e.message);
      if (missing && !flags.kubeconfig) continue;
      throw new UsageError(
        `error loading config file "${file}": ${(e as Error).message.split("\n")[0]}`,
      );
    }
  }
  if (loaded.length === 0 && !flags.server) {
    throw new UsageError(
      "no configuration has been provided, try setting KUBECONFIG or passing --kubeconfig",
    );
  }
  return applyOverrides({
    clusters: firstByName(loaded.map((k) => k.clusters)),
    users: firstByName(loaded.map((k) => k.users)),
    contexts: firstByName(loaded.map((k) => k.contexts)),
    currentContext: loaded.map((k) => k.currentContext).find((c) => c) ?? "",
  }, flags);
}

/** Applies `--context`, `--cluster`, `--user`, `--server`, `--token`, TLS flags to merged entries. */
function applyOverrides(kc: KcFile, flags: KubeFlags): KcSelection {
  const byName = <T extends Named>(list: T[], name: string | undefined) =>
    list.find((x) => x.name === name);
  const contextName = flags.context ?? kc.currentContext ?? "";
  if (flags.context && !byName(kc.contexts, flags.context)) {
    throw new UsageError(`context "${flags.context}" does not exist`);
  }
  const ctx: KcContext = byName(kc.contexts, contextName) ??
    { name: contextName || "relay", cluster: "", user: "" };
  const clusterName = flags.cluster ?? ctx.cluster;
  const userName = flags.user ?? ctx.user;
  if (flags.cluster && !byName(kc.clusters, flags.cluster)) {
    throw new UsageError(`cluster "${flags.cluster}" does not exist`);
  }
  if (flags.user && !byName(kc.users, flags.user)) {
    throw new UsageError(`user "${flags.user}" does not exist`);
  }
  const cluster: KcCluster = {
    ...(byName(kc.clusters, clusterName) ?? { name: clusterName || "relay", server: "" }),
  };
  const user: KcUser = { ...(byName(kc.users, userName) ?? { name: userName || "relay" }) };
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
  const name = ctx.name || "relay";
  return { cluster, user, context: { ...ctx, name, cluster: cluster.name, user: user.name } };
}

type Raw = Record<string, unknown>;

function entries(list: unknown, what: string, check: (e: Raw, where: string) => void): Raw[] {
  if (!Array.isArray(list)) return [];
  return list.map((e, i) => {
    const entry = (e ?? {}) as Raw;
    if (!entry.name) throw new Error(`${what}[${i}].name is missing`);
    check(entry, `${what}[${i}]`);
    return entry;
  });
}

function absolute(root: string, file: string | undefined): string | undefined {
  if (!file || !root || path.isAbsolute(file)) return file;
  return path.join(root, file);
}

/**
 * Reads one kubeconfig file as client-node's `KubeConfig.loadFromFile` does, with the same
 * errors (its validation messages; a `token-file` is read here, relative to the working
 * directory). Certificate and key paths become relative to the file's directory.
 */
export function readKubeconfigFile(file: string): KcFile {
  const root = path.dirname(file);
  const doc = yaml.load(Deno.readTextFileSync(file)) as Raw;
  const clusters = entries(doc.clusters, "clusters", (e, at) => {
    if (!e.cluster) throw new Error(`${at}.cluster is missing`);
    if (!(e.cluster as Raw).server) throw new Error(`${at}.cluster.server is missing`);
  }).map((e): KcCluster => {
    const c = e.cluster as Raw;
    return {
      name: e.name as string,
      server: (c.server as string).replace(/\/$/, ""),
      caData: c["certificate-authority-data"] as string | undefined,
      caFile: absolute(root, c["certificate-authority"] as string | undefined),
      skipTLSVerify: c["insecure-skip-tls-verify"] === true,
      tlsServerName: c["tls-server-name"] as string | undefined,
      proxyUrl: c["proxy-url"] as string | undefined,
    };
  });
  const contexts = entries(doc.contexts, "contexts", (e, at) => {
    if (!e.context) throw new Error(`${at}.context is missing`);
    if (!(e.context as Raw).cluster) throw new Error(`${at}.context.cluster is missing`);
  }).map((e): KcContext => {
    const c = e.context as Raw;
    return {
      name: e.name as string,
      cluster: c.cluster as string,
      user: (c.user as string) || undefined,
      namespace: (c.namespace as string) || undefined,
    };
  });
  const users = entries(doc.users, "users", () => {}).map((e): KcUser => {
    const u = (e.user ?? undefined) as Raw | undefined;
    let token = u?.token as string | undefined;
    if (!token && u?.["token-file"]) token = Deno.readTextFileSync(u["token-file"] as string);
    return {
      name: e.name as string,
      authProvider: u?.["auth-provider"],
      exec: u?.exec,
      certData: u?.["client-certificate-data"] as string | undefined,
      certFile: absolute(root, u?.["client-certificate"] as string | undefined),
      keyData: u?.["client-key-data"] as string | undefined,
      keyFile: absolute(root, u?.["client-key"] as string | undefined),
      token,
      username: u?.username as string | undefined,
      password: u?.password as string | undefined,
      impersonateUser: u?.as as string | undefined,
    };
  });
  return { clusters, users, contexts, currentContext: doc["current-context"] as string };
}

/** True when the user's token comes from an exec plugin or an auth provider (OIDC, …). */
export function needsPlugin(user: KcUser): boolean {
  return !!(user.exec || user.authProvider);
}

/** `Authorization: Basic …` for a kubeconfig user with `username`/`password` (and no token). */
export function basicAuthorization(user: KcUser): string | undefined {
  if (!user.username) return undefined;
  return `Basic ${Buffer.from(`${user.username}:${user.password ?? ""}`).toString("base64")}`;
}

function fileOrData(file: string | undefined, data: string | undefined): string | undefined {
  if (file) return Deno.readTextFileSync(file);
  if (data) return new TextDecoder().decode(Buffer.from(data, "base64"));
  return undefined;
}

/**
 * The credentials of a user without plugins, resolved in this process: certificates and keys
 * (inline or files), bearer token (inline or `token-file`), basic auth, `as:` impersonation.
 * Returns undefined when the user needs an exec plugin or auth provider. Throws on any problem
 * (the caller then lets the helper process report it, in the library's words).
 */
export function staticCredentials(flags: KubeFlags): Credentials | undefined {
  const { cluster, user, context } = selectKubeconfig(flags, readKubeconfigFile);
  if (needsPlugin(user)) return undefined;
  const headers: Record<string, string> = {};
  if (user.impersonateUser != null) headers["Impersonate-User"] = user.impersonateUser;
  if (user.token) headers.Authorization = `Bearer ${user.token}`;
  else {
    const basic = basicAuthorization(user);
    if (basic) headers.Authorization = basic;
  }
  return {
    server: cluster.server.replace(/\/+$/, ""),
    namespace: flags.namespace || context.namespace || "default",
    contextName: context.name,
    ca: fileOrData(cluster.caFile, cluster.caData),
    cert: fileOrData(user.certFile, user.certData),
    key: fileOrData(user.keyFile, user.keyData),
    headers,
    insecure: !!cluster.skipTLSVerify,
    refreshable: false,
  };
}
