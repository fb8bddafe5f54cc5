/**
 * The kubectl connection flags (`--kubeconfig`, `--context`, `--token`, …): which cluster to
 * reach and as whom. The CLI parses them; src/kube only ever sees this small type.
 *
 * @module
 */

/** How to reach the apiserver, as given on the command line (kubectl's meaning for each). */
export interface KubeFlags {
  kubeconfig?: string;
  context?: string;
  cluster?: string;
  user?: string;
  /** `-n`: overrides the context's namespace. */
  namespace?: string;
  /** `--request-timeout`; 0 = no timeout. */
  requestTimeoutMs: number;
  insecureSkipTlsVerify: boolean;
  /** `--as`: impersonated user. */
  as?: string;
  /** `--as-group`: impersonated groups. */
  asGroups: string[];
  token?: string;
  server?: string;
  certificateAuthority?: string;
  clientCertificate?: string;
  clientKey?: string;
}

/** Default values of the connection flags. */
export function defaultKubeFlags(): KubeFlags {
  return { requestTimeoutMs: 0, insecureSkipTlsVerify: false, asGroups: [] };
}

const KEYS: readonly (keyof KubeFlags)[] = [
  "kubeconfig",
  "context",
  "cluster",
  "user",
  "namespace",
  "requestTimeoutMs",
  "insecureSkipTlsVerify",
  "as",
  "asGroups",
  "token",
  "server",
  "certificateAuthority",
  "clientCertificate",
  "clientKey",
];

/** Only the connection flags of a larger flag set (what the credentials helper is given). */
export function kubeFlagsOf(flags: KubeFlags): KubeFlags {
  const out: Record<string, unknown> = {};
  for (const k of KEYS) if (flags[k] !== undefined) out[k] = flags[k];
  return out as unknown as KubeFlags;
}
