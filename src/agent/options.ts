/**
 * Command-line options of the agent:
 * `agent.ts [--listen HOST:PORT] [--health HOST:PORT] [--idle-exit DURATION] [--udp-idle DURATION]
 * [--connect-timeout DURATION] [--resolve-timeout DURATION] [--ping-timeout DURATION]
 * [--max-streams N] [-v N]`.
 * `--idle-timeout` (krelay's server flag) is another name for `--idle-exit`; 0 disables both.
 * The token comes from the environment (`KUBECTL_RELAY_TOKEN`, see `src/protocol/auth.ts`).
 *
 * @module
 */

import { parseDuration } from "../protocol/duration.ts";

/** Parsed agent options (durations in milliseconds). */
export interface AgentOptions {
  /** Address to listen on (IPv6 without brackets). Default 127.0.0.1: the pod's loopback. */
  hostname: string;
  /** Port to listen on (0 = any free port). */
  port: number;
  /**
   * Where to serve the health port (`--health`): it accepts connections and closes them at once,
   * carrying nothing, for a kubelet's tcpSocket readiness probe. Undefined: no health port.
   */
  health?: { hostname: string; port: number };
  /** Exit after this long with no session and no stream; 0 disables. Default 5 m. */
  idleExitMs: number;
  /** A UDP flow with no datagram either way for this long is closed. Default 60 s. */
  udpIdleMs: number;
  /** TCP connect timeout per destination. Default 10 s. */
  connectTimeoutMs: number;
  /** Hostname resolution timeout. Default 10 s. */
  resolveTimeoutMs: number;
  /** A tunnel session with no frame from the client for this long is dead. Default 15 s. */
  pingTimeoutMs: number;
  /**
   * Streams one tunnel session may have open (`--max-streams`). Default: sized to the
   * container's memory limit (src/agent/memory.ts).
   */
  maxStreams?: number;
  /** Log verbosity: 0 = one line per request outcome, 1 = + session events, 2+ = debug. */
  verbosity: number;
}

/** Defaults of {@link AgentOptions}. */
export const DEFAULT_AGENT_OPTIONS: Readonly<AgentOptions> = {
  hostname: "127.0.0.1",
  port: 9527,
  idleExitMs: 5 * 60_000,
  udpIdleMs: 60_000,
  connectTimeoutMs: 10_000,
  resolveTimeoutMs: 10_000,
  pingTimeoutMs: 15_000,
  verbosity: 0,
};

/** Invalid command line. */
export class AgentUsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AgentUsageError";
  }
}

/**
 * Parses a duration flag's value (protocol/duration.ts: `500ms`, `1m30s`, `2h`, a bare integer
 * means seconds). Throws AgentUsageError on bad input.
 */
export function parseAgentDuration(text: string, flag: string): number {
  const ms = parseDuration(text);
  if (ms === undefined) {
    throw new AgentUsageError(`invalid duration ${JSON.stringify(text)} for ${flag}`);
  }
  return ms;
}

/** Splits `HOST:PORT` / `[V6]:PORT` / `:PORT` (the value of `flag`, for messages). */
export function parseListen(text: string, flag = "--listen"): { hostname: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    throw new AgentUsageError(`invalid ${flag} ${JSON.stringify(text)} (want HOST:PORT)`);
  }
  return { hostname: m[1] ?? (m[2] === "" ? "0.0.0.0" : m[2]), port };
}

/** Parses the agent's arguments. Throws AgentUsageError on bad input. */
export function parseAgentArgs(args: readonly string[]): AgentOptions {
  const o: AgentOptions = { ...DEFAULT_AGENT_OPTIONS };
  for (let i = 0; i < args.length; i++) {
    let flag = args[i];
    let value: string | undefined;
    const eq = flag.indexOf("=");
    if (flag.startsWith("-") && eq !== -1) {
      value = flag.slice(eq + 1);
      flag = flag.slice(0, eq);
    }
    const next = (): string => {
      if (value !== undefined) return value;
      if (i + 1 >= args.length) throw new AgentUsageError(`flag ${flag} needs a value`);
      return args[++i];
    };
    switch (flag.replace(/^--?/, "-")) {
      case "-listen": {
        const l = parseListen(next());
        o.hostname = l.hostname;
        o.port = l.port;
        break;
      }
      case "-health":
        o.health = parseListen(next(), "--health");
        break;
      case "-idle-exit":
      case "-idle-timeout": // krelay's server flag, so patches written for krelay work
        o.idleExitMs = parseAgentDuration(next(), flag);
        break;
      case "-udp-idle":
        o.udpIdleMs = parseAgentDuration(next(), flag);
        break;
      case "-connect-timeout":
        o.connectTimeoutMs = parseAgentDuration(next(), flag);
        break;
      case "-resolve-timeout":
        o.resolveTimeoutMs = parseAgentDuration(next(), flag);
        break;
      case "-ping-timeout":
        o.pingTimeoutMs = parseAgentDuration(next(), flag);
        if (o.pingTimeoutMs <= 0) throw new AgentUsageError(`${flag} must be positive`);
        break;
      case "-max-streams": {
        const v = next();
        if (!/^\d+$/.test(v) || Number(v) < 1) {
          throw new AgentUsageError(`${flag} needs a positive integer, got ${JSON.stringify(v)}`);
        }
        o.maxStreams = Number(v);
        break;
      }
      case "-v": {
        const v = next();
        if (!/^\d+$/.test(v)) throw new AgentUsageError(`invalid verbosity ${JSON.stringify(v)}`);
        o.verbosity = Number(v);
        break;
      }
      default:
        throw new AgentUsageError(`unknown flag ${JSON.stringify(args[i])}`);
    }
  }
  return o;
}
