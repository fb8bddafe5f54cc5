import { UsageError } from "../errors.ts";
import { parseDuration } from "./duration.ts";
import { defaultKubeFlags, type KubeFlags } from "../kube/flags.ts";

/**
 * Every flag `kubectl relay` understands, after parsing. The kubectl connection flags are
 * src/kube's (KubeFlags); the others configure the relay itself.
 */
export interface Flags extends KubeFlags {
  address?: string[];
  serverImage?: string;
  serverNamespace: string;
  file?: string;
  patch?: string;
  patchFile?: string;
  verbosity: number;
  version: boolean;
  help: boolean;
  podRunningTimeoutMs: number;
  heartbeatTimeoutMs: number;
  /** `kubectl relay proxy` only: local port of the SOCKS5/HTTP proxy. */
  port?: number;
  /** Use (and leave behind) a shared agent: see README, "Reusing the agent". */
  reuseAgent?: boolean;
}

type Kind = "string" | "bool" | "int" | "duration" | "list";

interface FlagDef {
  names: string[];
  kind: Kind;
  key: keyof Flags;
  /** Only accepted on lines of a `-f` file (and the command line). */
  perTarget?: boolean;
}

const DEFS: FlagDef[] = [
  { names: ["--address", "-l"], kind: "list", key: "address", perTarget: true },
  { names: ["--server.image"], kind: "string", key: "serverImage" },
  { names: ["--server.namespace"], kind: "string", key: "serverNamespace" },
  { names: ["--file", "-f"], kind: "string", key: "file" },
  { names: ["--patch", "-p"], kind: "string", key: "patch" },
  { names: ["--patch-file"], kind: "string", key: "patchFile" },
  { names: ["--v", "-v"], kind: "int", key: "verbosity" },
  { names: ["--version", "-V"], kind: "bool", key: "version" },
  { names: ["--help", "-h"], kind: "bool", key: "help" },
  { names: ["--kubeconfig"], kind: "string", key: "kubeconfig" },
  { names: ["--context"], kind: "string", key: "context" },
  { names: ["--cluster"], kind: "string", key: "cluster" },
  { names: ["--user"], kind: "string", key: "user" },
  { names: ["--namespace", "-n"], kind: "string", key: "namespace", perTarget: true },
  { names: ["--request-timeout"], kind: "duration", key: "requestTimeoutMs" },
  { names: ["--insecure-skip-tls-verify"], kind: "bool", key: "insecureSkipTlsVerify" },
  { names: ["--as"], kind: "string", key: "as" },
  { names: ["--as-group"], kind: "list", key: "asGroups" },
  { names: ["--token"], kind: "string", key: "token" },
  { names: ["--server", "-s"], kind: "string", key: "server" },
  { names: ["--certificate-authority"], kind: "string", key: "certificateAuthority" },
  { names: ["--client-certificate"], kind: "string", key: "clientCertificate" },
  { names: ["--client-key"], kind: "string", key: "clientKey" },
  { names: ["--pod-running-timeout"], kind: "duration", key: "podRunningTimeoutMs" },
  { names: ["--heartbeat-timeout"], kind: "duration", key: "heartbeatTimeoutMs" },
  { names: ["--port"], kind: "int", key: "port" },
  { names: ["--reuse-agent"], kind: "bool", key: "reuseAgent" },
];

/** Flag names and their meaning, for `--help`. */
export const FLAG_HELP: [string, string][] = [
  [
    "--address",
    "Addresses to listen on (comma separated). Only accepts IP addresses or localhost. Default 127.0.0.1",
  ],
  ["--server.image", "The agent image to use"],
  ["--server.namespace", 'The namespace in which the agent runs (default "default")'],
  ["-f, --file", "Forward to the targets listed in a file, one per line"],
  ["-p, --patch", "A JSON merge patch applied to the agent's pod spec"],
  ["--patch-file", "A file holding that JSON merge patch"],
  ["--pod-running-timeout", "How long to wait until a ready pod is found (default 1m0s)"],
  [
    "--reuse-agent",
    "Use a running agent of yours with the same image and patch, and leave the agent running (it exits after 5m idle)",
  ],
  [
    "--heartbeat-timeout",
    "Declare the tunnel dead after this long without an answer (default 15s)",
  ],
  ["-v, --v", "Log level for verbose output"],
  ["-V, --version", "Print version information"],
  ["-n, --namespace", "The namespace of the target"],
  ["--kubeconfig, --context, --cluster, --user, --as, --as-group, --token, -s/--server,", ""],
  ["--request-timeout, --insecure-skip-tls-verify, --certificate-authority,", ""],
  ["--client-certificate, --client-key", "As for kubectl"],
];

/** Default flag values. */
export function defaultFlags(): Flags {
  return {
    ...defaultKubeFlags(),
    serverNamespace: "default",
    verbosity: 0,
    version: false,
    help: false,
    podRunningTimeoutMs: 60_000,
    heartbeatTimeoutMs: 15_000,
  };
}

function lookup(name: string): FlagDef | undefined {
  return DEFS.find((d) => d.names.includes(name));
}

function setValue(flags: Flags, def: FlagDef, name: string, value: string): void {
  const rec = flags as unknown as Record<string, unknown>;
  switch (def.kind) {
    case "string":
      if (value === "" && def.key !== "namespace") {
        throw new UsageError(`flag needs a non-empty argument: ${name}`);
      }
      rec[def.key] = value;
      return;
    case "bool":
      if (value !== "true" && value !== "false") {
        throw new UsageError(
          `invalid argument "${value}" for "${name}" flag: expected true or false`,
        );
      }
      rec[def.key] = value === "true";
      return;
    case "int":
      if (!/^\d+$/.test(value)) {
        throw new UsageError(`invalid argument "${value}" for "${name}" flag: not a number`);
      }
      rec[def.key] = Number(value);
      return;
    case "duration":
      rec[def.key] = parseDuration(value, name);
      return;
    case "list": {
      const items = value.split(",").map((s) => s.trim()).filter((s) => s !== "");
      rec[def.key] = [...((rec[def.key] as string[] | undefined) ?? []), ...items];
      return;
    }
  }
}

/** The result of parsing a command line: flags plus positional arguments. */
export interface ParsedArgs {
  flags: Flags;
  positionals: string[];
}

/**
 * Parses a kubectl-style command line: flags may appear anywhere, as `--name value`,
 * `--name=value`, `-n value`, `-nvalue`; `--` ends flags. Unknown flags are an error.
 * With `perTargetOnly`, only flags allowed on `-f` file lines are accepted.
 */
export function parseArgs(
  argv: string[],
  base = defaultFlags(),
  perTargetOnly = false,
): ParsedArgs {
  const flags: Flags = { ...base, asGroups: [...base.asGroups] };
  if (perTargetOnly) delete flags.address;
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--") {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith("-") || arg === "-") {
      positionals.push(arg);
      continue;
    }
    let name = arg;
    let inline: string | undefined;
    const eq = arg.indexOf("=");
    if (arg.startsWith("--") && eq > 0) {
      name = arg.slice(0, eq);
      inline = arg.slice(eq + 1);
    } else if (!arg.startsWith("--") && arg.length > 2) {
      name = arg.slice(0, 2);
      inline = arg.slice(2).replace(/^=/, "");
    }
    const def = lookup(name);
    if (!def || (perTargetOnly && !def.perTarget)) {
      throw new UsageError(
        name.startsWith("--")
          ? `unknown flag: ${name}`
          : `unknown shorthand flag: '${name.slice(1)}' in ${arg}`,
        true,
      );
    }
    let value = inline;
    if (value === undefined) {
      if (def.kind === "bool") {
        value = "true";
      } else {
        if (i + 1 >= argv.length) throw new UsageError(`flag needs an argument: ${arg}`, true);
        value = argv[++i];
      }
    }
    setValue(flags, def, name, value);
  }
  return { flags, positionals };
}
