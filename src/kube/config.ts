import { UsageError } from "../errors.ts";
import { type Credentials, staticCredentials } from "./kubeconfig.ts";
import { type KubeFlags, kubeFlagsOf } from "./flags.ts";
import { selfCommand } from "./self.ts";
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
  /** Authentication and impersonation headers (refreshed when tokens expire). */
  headers(): Promise<Headers>;
  /** Fetches credentials again (after a 401); false if they cannot change. */
  refresh(): Promise<boolean>;
  /** 0 = no timeout. */
  requestTimeoutMs: number;
  /** True when TLS verification is off (`--insecure-skip-tls-verify`). */
  insecure: boolean;
}

/** Exec-plugin and OIDC tokens are fetched again after this long. */
const REFRESH_AFTER_MS = 4 * 60_000;

/**
 * The command that runs this program's credentials helper (`main.ts __credentials JSON`, the
 * connection flags as one JSON argument).
 */
function helperCommand(flags: KubeFlags): Deno.Command {
  const { cmd, args } = selfCommand([], ["__credentials", JSON.stringify(kubeFlagsOf(flags))]);
  return new Deno.Command(cmd, { args, stdin: "inherit", stdout: "piped", stderr: "inherit" });
}

/** Runs the credentials helper process (stdin/stderr stay the user's, for interactive exec plugins). */
export async function fetchCredentials(flags: KubeFlags): Promise<Credentials> {
  const out = await helperCommand(flags).output();
  const text = new TextDecoder().decode(out.stdout).trim().split("\n").at(-1) ?? "";
  let parsed: { credentials?: Credentials; error?: string; usage?: boolean };
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new Error(`loading credentials failed (helper exit code ${out.code})`);
  }
  if (parsed.credentials) return parsed.credentials;
  if (parsed.usage) throw new UsageError(parsed.error ?? "invalid kubeconfig");
  throw new Error(parsed.error ?? "loading credentials failed");
}

/** Builds the apiserver access from credentials; `load` fetches fresh ones when tokens expire. */
export function accessFrom(
  first: Credentials,
  flags: KubeFlags,
  load: () => Promise<Credentials>,
): KubeAccess {
  if (first.insecure && !tlsVerificationDisabled()) {
    throw new InsecureTlsRequired(new URL(first.server).hostname.replace(/^\[|\]$/g, ""));
  }
  let httpClient: Deno.HttpClient;
  try {
    httpClient = Deno.createHttpClient({
      ...(first.ca ? { caCerts: [first.ca] } : {}),
      ...(first.cert && first.key ? { cert: first.cert, key: first.key } : {}),
      http2: false,
    });
  } catch (e) {
    throw new UsageError(`invalid TLS material in kubeconfig: ${(e as Error).message}`);
  }
  let current = first;
  let fetchedAt = Date.now();
  let pending: Promise<boolean> | undefined;
  const refresh = () => {
    if (!current.refreshable) return Promise.resolve(false);
    pending ??= load().then((c) => {
      current = c;
      fetchedAt = Date.now();
      return true;
    }).finally(() => (pending = undefined));
    return pending;
  };
  return {
    server: first.server,
    namespace: first.namespace,
    contextName: first.contextName,
    httpClient,
    requestTimeoutMs: flags.requestTimeoutMs,
    insecure: first.insecure,
    refresh,
    async headers() {
      if (current.refreshable && Date.now() - fetchedAt > REFRESH_AFTER_MS) {
        await refresh().catch(() => false); // keep the old token; a 401 will say if it expired
      }
      const h = new Headers(current.headers);
      if (flags.as) h.set("Impersonate-User", flags.as);
      for (const g of flags.asGroups) h.append("Impersonate-Group", g);
      return h;
    },
  };
}

/**
 * Resolves the user's credentials and builds the apiserver access. Static credentials
 * (certificates, tokens, token files, basic auth) are read in this process; exec plugins and auth
 * providers run in the helper process, which also words every kubeconfig error (so errors read
 * the same whichever way the credentials would have come).
 */
export async function kubeAccess(
  flags: KubeFlags,
  log: (line: string) => void = () => {},
  helper: (flags: KubeFlags) => Promise<Credentials> = fetchCredentials,
): Promise<KubeAccess> {
  let first: Credentials | undefined;
  try {
    first = staticCredentials(flags);
    if (first) log("credentials: read from the kubeconfig in this process");
  } catch (e) {
    log(`credentials: in-process read failed (${(e as Error).message}); asking the helper`);
  }
  if (!first) {
    first = await helper(flags);
    log("credentials: from the helper process (exec plugin or auth provider)");
  }
  return accessFrom(first, flags, () => helper(flags));
}
