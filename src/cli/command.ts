import { UsageError } from "../errors.ts";
import { type Flags, parseArgs } from "./flags.ts";
import { parsePortSpec } from "../spec/ports.ts";
import { expandAddresses, type ForwardRequest } from "../spec/request.ts";
import { parseTarget } from "../spec/target.ts";

/** What the user asked for. */
export interface Command {
  kind: "forward" | "proxy" | "version" | "help";
  flags: Flags;
  /** The arguments as given (to run this program again with them, see src/kube/insecure.ts). */
  argv: string[];
  requests: ForwardRequest[];
  /** Lines for stderr before anything else (deprecated flags). */
  warnings: string[];
}

function toRequest(positionals: string[], flags: Flags, where: string): ForwardRequest {
  if (positionals.length === 0) {
    throw new UsageError(`TYPE/NAME and list of ports are required for port-forward${where}`, true);
  }
  if (positionals.length === 1) {
    throw new UsageError(`at least 1 PORT is required for port-forward${where}`, true);
  }
  const target = parseTarget(positionals[0]);
  const ports = positionals.slice(1).map(parsePortSpec);
  return { target, ports, namespace: flags.namespace, addresses: expandAddresses(flags.address) };
}

/** Splits a `-f` file line into words (supports simple quotes), dropping `#` comments. */
function splitLine(line: string): string[] {
  const words: string[] = [];
  const re = /"([^"]*)"|'([^']*)'|(\S+)/g;
  const body = line.replace(/(^|\s)#.*$/, "");
  for (let m = re.exec(body); m !== null; m = re.exec(body)) words.push(m[1] ?? m[2] ?? m[3]);
  return words;
}

/** Parses the `-f` file text into requests; per-line `-n` and `-l/--address` override the globals. */
export function parseTargetFile(text: string, file: string, flags: Flags): ForwardRequest[] {
  const out: ForwardRequest[] = [];
  text.split(/\r?\n/).forEach((line, i) => {
    const words = splitLine(line);
    if (words.length === 0) return;
    const where = ` (${file}:${i + 1})`;
    try {
      const parsed = parseArgs(words, flags, true);
      const lineFlags = { ...parsed.flags, address: parsed.flags.address ?? flags.address };
      out.push(toRequest(parsed.positionals, lineFlags, where));
    } catch (e) {
      if (e instanceof UsageError && !e.message.endsWith(")")) {
        throw new UsageError(`${e.message}${where}`);
      }
      throw e;
    }
  });
  if (out.length === 0) throw new UsageError(`${file} lists no targets`);
  return out;
}

/** Parses the whole command line (`readFile` is injected for tests). */
export function parseCommand(
  argv: string[],
  readFile: (path: string) => string = Deno.readTextFileSync,
): Command {
  // `proxy` has flags of its own (`-l` is krelay's `--listen HOST:PORT` there): parse as proxy
  // when the first argument that is not a flag is `proxy`.
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs(argv, undefined, false, "proxy");
    if (parsed.positionals[0] !== "proxy") parsed = parseArgs(argv);
  } catch (e) {
    parsed = parseArgs(argv);
    if (parsed.positionals[0] === "proxy") throw e;
  }
  let { flags } = parsed;
  const { positionals, warnings } = parsed;
  if (flags.help) return { kind: "help", flags, argv, requests: [], warnings };
  if (flags.version) return { kind: "version", flags, argv, requests: [], warnings };
  if (positionals[0] === "proxy") {
    if (positionals.length > 1) {
      throw new UsageError(`proxy takes no arguments, got "${positionals[1]}"`, true);
    }
    if (flags.direct) {
      throw new UsageError(
        "proxy needs the agent (its connections are dialled inside the cluster); --direct cannot be used with it",
      );
    }
    if (flags.listen !== undefined) {
      if (flags.address !== undefined || flags.port !== undefined) {
        throw new UsageError("give either -l/--listen HOST:PORT or --address/--port, not both");
      }
      const { address, port } = parseListen(flags.listen);
      flags = { ...flags, address: [address], port };
    }
    expandAddresses(flags.address);
    return { kind: "proxy", flags, argv, requests: [], warnings };
  }
  const requests: ForwardRequest[] = [];
  if (flags.file) {
    let text: string;
    try {
      text = readFile(flags.file);
    } catch (e) {
      throw new UsageError(`cannot read ${flags.file}: ${(e as Error).message}`);
    }
    requests.push(...parseTargetFile(text, flags.file, flags));
  }
  if (positionals.length > 0 || requests.length === 0) {
    requests.push(toRequest(positionals, flags, ""));
  }
  return { kind: "forward", flags, argv, requests, warnings };
}

/**
 * Parses `HOST:PORT` / `[V6]:PORT` / `:PORT` (krelay's `proxy --listen`). As there (Go's
 * `net.Listen`), an empty host means every address (0.0.0.0).
 */
export function parseListen(text: string): { address: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    throw new UsageError(`invalid argument "${text}" for "--listen" flag: expected HOST:PORT`);
  }
  const host = m[1] ?? m[2];
  return { address: host === "" ? "0.0.0.0" : host, port };
}
