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
  /** `--server.namespace`; unset = the patch's metadata.namespace, else `default`. */
  serverNamespace?: string;
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
  /** `kubectl relay proxy` only: `-l/--listen HOST:PORT` (krelay's form of address + port). */
  listen?: string;
  /** `--direct`: no agent; each connection is a port-forward to the target pod itself. */
  direct: boolean;
  /** krelay's deprecated `--rm` (always the case here): accepted, no effect. */
  rm?: boolean;
  /** kubectl's `--cache-dir`: accepted, no effect (no discovery cache here). */
  cacheDir?: string;
  /** kubectl's `--disable-compression`: accepted, no effect. */
  disableCompression?: boolean;
  /** Use (and leave behind) a shared agent: see README, "Reusing the agent". */
  reuseAgent?: boolean;
}

/** Which command a flag belongs to: `proxy` reads `-l` as `--listen`, forwarding as `--address`. */
export type CommandMode = "forward" | "proxy";

type Kind = "string" | "bool" | "int" | "duration" | "list";

interface FlagDef {
  names: string[];
  kind: Kind;
  key: keyof Flags;
  /** Only accepted on lines of a `-f` file (and the command line). */
  perTarget?: boolean;
  /** Only for this command (a name may mean another flag elsewhere, as `-l`). */
  mode?: CommandMode;
}

const DEFS: FlagDef[] = [
  { names: ["--listen", "-l"], kind: "string", key: "listen", mode: "proxy" },
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
  { names: ["--direct"], kind: "bool", key: "direct" },
  { names: ["--rm"], kind: "bool", key: "rm" },
  { names: ["--cache-dir"], kind: "string", key: "cacheDir" },
  { names: ["--disable-compression"], kind: "bool", key: "disableCompression" },
  { names: ["--reuse-agent"], kind: "bool", key: "reuseAgent" },
];

/** krelay's klog flags (hidden in its help, but accepted there). */
const KLOG_FLAGS = [
  "--add_dir_header",
  "--alsologtostderr",
  "--log_backtrace_at",
  "--log_dir",
  "--log_file",
  "--log_file_max_size",
  "--log_flush_frequency",
  "--logtostderr",
  "--one_output",
  "--skip_headers",
  "--skip_log_headers",
  "--stderrthreshold",
  "--vmodule",
];

/**
 * Flags of krelay (or of kubectl's connection flags, which krelay takes) that kubectl relay does
 * not support, and what to do instead: an error naming both beats "unknown flag".
 */
export const UNSUPPORTED_FLAGS: Readonly<Record<string, string>> = {
  ...Object.fromEntries(
    KLOG_FLAGS.map((f) => [f, "kubectl relay logs to stderr only; use -v N for more detail"]),
  ),
  "--server.pull-policy":
    `set it with --patch '{"spec":{"containers":[{"name":"agent","imagePullPolicy":"Always"}]}}'`,
  "--derp-map-url":
    "kubectl relay reaches its agent through the apiserver's port-forward; there is no DERP relay to choose",
  "--tls-server-name": "set tls-server-name on the cluster in your kubeconfig",
  "--username": "basic authentication is not supported; use --token or your kubeconfig's user",
  "--password": "basic authentication is not supported; use --token or your kubeconfig's user",
  "--as-uid": "impersonating a UID is not supported; use --as and --as-group",
};

/** Flags that are accepted but mean nothing here; the value is the warning printed (or ""). */
const NO_EFFECT: Readonly<Record<string, string>> = {
  "--rm": "Flag --rm has been deprecated, the agent is always removed when kubectl relay exits",
  "--cache-dir": "",
  "--disable-compression": "",
};

/** Flag names and their meaning, for `--help`. */
export const FLAG_HELP: [string, string][] = [
  [
    "-l, --address",
    "Addresses to listen on (comma separated). Only accepts IP addresses or localhost. Default 127.0.0.1",
  ],
  ["--server.image", "The agent image to use"],
  ["--server.namespace", 'The namespace in which the agent runs (default "default")'],
  ["-f, --file", "Forward to the targets listed in a file, one per line"],
  [
    "-p, --patch",
    "A merge patch (JSON or YAML) of the agent's Pod: metadata.namespace/labels/annotations, spec",
  ],
  ["--patch-file", "A file holding that merge patch"],
  [
    "--direct",
    "No agent: each connection is a port-forward to the target pod itself (TCP to pods, workloads, services)",
  ],
  ["-l, --listen", "proxy only: HOST:PORT to listen on (default 127.0.0.1:1080; :0 = random port)"],
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
    verbosity: 0,
    version: false,
    help: false,
    podRunningTimeoutMs: 60_000,
    heartbeatTimeoutMs: 15_000,
    direct: false,
  };
}

function lookup(name: string, mode: CommandMode): FlagDef | undefined {
  return DEFS.find((d) => d.names.includes(name) && (d.mode === undefined || d.mode === mode));
}

/** The error for a flag that is not (or not here) a flag of ours, with advice when we have some. */
function unknownFlag(name: string, arg: string, mode: CommandMode): UsageError {
  const advice = UNSUPPORTED_FLAGS[name];
  if (advice) return new UsageError(`flag ${name} is not supported by kubectl relay: ${advice}`);
  if (name === "--listen" && mode === "forward") {
    return new UsageError(
      "--listen is a flag of `kubectl relay proxy`; to forward ports, listen with --address (-l) and give LOCAL_PORT:REMOTE_PORT",
      true,
    );
  }
  return new UsageError(
    name.startsWith("--")
      ? `unknown flag: ${name}`
      : `unknown shorthand flag: '${name.slice(1)}' in ${arg}`,
    true,
  );
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
  /** Lines to print on stderr (deprecated flags). */
  warnings: string[];
}

/**
 * Parses a kubectl-style command line: flags may appear anywhere, as `--name value`,
 * `--name=value`, `-n value`, `-nvalue`; `--` ends flags. Unknown flags are an error.
 * With `perTargetOnly`, only flags allowed on `-f` file lines are accepted. `mode` says which
 * command the flags are for (`-l` is `--listen` for `proxy`, `--address` otherwise).
 */
export function parseArgs(
  argv: string[],
  base = defaultFlags(),
  perTargetOnly = false,
  mode: CommandMode = "forward",
): ParsedArgs {
  const flags: Flags = { ...base, asGroups: [...base.asGroups] };
  if (perTargetOnly) delete flags.address;
  const positionals: string[] = [];
  const warnings: string[] = [];
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
    const def = lookup(name, mode);
    if (!def || (perTargetOnly && !def.perTarget)) throw unknownFlag(name, arg, mode);
    const warning = NO_EFFECT[name];
    if (warning && !warnings.includes(warning)) warnings.push(warning);
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
  return { flags, positionals, warnings };
}
