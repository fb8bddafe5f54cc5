/**
 * The agent's listener: accepts connections, checks the Token block every connection starts
 * with (PROTOCOL.md §0: no token, an incomplete or a wrong one closes the connection before
 * anything else is read or dialed), then tells raw-mode connections (next byte 0: one Header,
 * one relayed stream) from tunnel connections (next bytes = the mux PREFACE, whose first byte is
 * nonzero: a multiplexed Session). Serves the optional health port (accept and close). Tracks
 * activity and signals idle exit.
 *
 * @module
 */

import { hostPort } from "../protocol/addr.ts";
import { decodeAuth, tokensEqual } from "../protocol/auth.ts";
import { decodeHeader, MAX_HEADER_LENGTH } from "../protocol/header.ts";
import { PREFACE } from "../protocol/mux.ts";
import { Status } from "../protocol/status.ts";
import { Session, type Stream } from "../mux/mod.ts";
import { connTransport, prefixedTransport } from "../mux/mod.ts";
import { connEndpoint, streamEndpoint } from "./endpoint.ts";
import { handleHeaderBytes, type HandlerContext, handleRequest } from "./handler.ts";
import type { AgentLogger } from "./log.ts";
import { AGENT_RECEIVE_BUDGET, cgroupMemoryLimit, streamCap } from "./memory.ts";
import type { AgentOptions } from "./options.ts";
import type { Resolver } from "./dial.ts";

/** A connection must show its Token block and its Header or PREFACE within this time. */
const SNIFF_TIMEOUT_MS = 10_000;

/** Connections served at once (raw streams, sessions, connections being sniffed); more are closed. */
export const MAX_CONNECTIONS = 8192;

/** Options of {@link startAgent}. */
export interface AgentServerOptions extends AgentOptions {
  log: AgentLogger;
  /** The agent's token: a connection whose Token block carries another one is closed. */
  token: Uint8Array;
  /** Test hook: replaces the system resolver. */
  resolver?: Resolver;
}

/** Why a running agent stopped. */
export interface AgentStop {
  reason: string;
  /** True when it stopped because something failed (the listener), not by request or idleness. */
  failed: boolean;
}

/** The agent could not start (e.g. its port is taken); the message names the address. */
export class AgentStartError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "AgentStartError";
  }
}

/** A running agent. */
export interface AgentServer {
  /** The bound address. */
  readonly addr: Deno.NetAddr;
  /** The bound health address, when `health` was given. */
  readonly healthAddr?: Deno.NetAddr;
  /** Resolves when the agent stopped (idle exit, `close()`, or a failed listener). */
  readonly done: Promise<AgentStop>;
  /** Stops listening and ends all sessions and streams. */
  close(reason?: string): void;
}

/** Formats the readiness line printed on stdout. */
export function listeningLine(a: Deno.NetAddr): string {
  return `listening on ${hostPort(a.hostname, a.port)}`;
}

function listenOn(hostname: string, port: number, what: string): Deno.TcpListener {
  try {
    return Deno.listen({ hostname, port, transport: "tcp" });
  } catch (e) {
    const where = hostPort(hostname, port);
    const why = e instanceof Error ? e.message : String(e);
    throw new AgentStartError(`cannot listen on ${where} (${what}): ${why}`, { cause: e });
  }
}

/**
 * Starts listening; returns once bound. Throws {@link AgentStartError} if an address cannot be
 * bound (nothing is left listening then).
 */
export function startAgent(opts: AgentServerOptions): AgentServer {
  const listener = listenOn(opts.hostname, opts.port, "tunnel");
  let health: Deno.TcpListener | undefined;
  if (opts.health) {
    try {
      health = listenOn(opts.health.hostname, opts.health.port, "health");
    } catch (e) {
      listener.close();
      throw e;
    }
  }
  const log = opts.log;
  let maxStreams = opts.maxStreams;
  if (maxStreams === undefined) {
    const limit = cgroupMemoryLimit();
    maxStreams = streamCap(limit);
    const mib = limit === undefined ? "none" : `${Math.round(limit / 1048576)} MiB`;
    log.log(1, "-", `memory limit ${mib}: at most ${maxStreams} streams per session`);
  }
  const ctx: HandlerContext = {
    log,
    connectTimeoutMs: opts.connectTimeoutMs,
    resolveTimeoutMs: opts.resolveTimeoutMs,
    udpIdleMs: opts.udpIdleMs,
    resolver: opts.resolver,
  };
  const conns = new Set<Deno.Conn>();
  const sessions = new Set<Session>();
  let active = 0; // sessions + raw streams
  let stopped = false;
  let idleTimer: ReturnType<typeof setTimeout> | undefined;
  let resolveDone!: (r: AgentStop) => void;
  const done = new Promise<AgentStop>((r) => resolveDone = r);

  const stop = (reason: string, failed = false) => {
    if (stopped) return;
    stopped = true;
    clearTimeout(idleTimer);
    for (const l of [listener, health]) {
      try {
        l?.close();
      } catch {
        // closed
      }
    }
    for (const s of sessions) s.close(reason);
    for (const c of conns) {
      try {
        c.close();
      } catch {
        // closed
      }
    }
    log.log(0, "-", `agent stopping: ${reason}`);
    resolveDone({ reason, failed });
  };

  const armIdle = () => {
    clearTimeout(idleTimer);
    if (opts.idleExitMs <= 0 || stopped) return;
    idleTimer = setTimeout(() => {
      if (active === 0) stop(`idle for ${opts.idleExitMs}ms with no session and no stream`);
    }, opts.idleExitMs);
  };
  const busy = () => {
    if (active++ === 0) clearTimeout(idleTimer);
  };
  const idle = () => {
    if (--active === 0) armIdle();
  };
  armIdle();

  const peer = (c: Deno.Conn) => {
    const a = c.remoteAddr as Deno.NetAddr;
    return hostPort(a.hostname, a.port);
  };

  /** Reads until `want` bytes are buffered (or EOF / limit). */
  const readAtLeast = async (
    conn: Deno.Conn,
    have: Uint8Array,
    want: number,
    deadline: number,
  ): Promise<Uint8Array | null> => {
    let buf = have;
    const chunk = new Uint8Array(4096);
    while (buf.length < want) {
      const left = deadline - Date.now();
      if (left <= 0) return null;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const n = await Promise.race([
        conn.read(chunk),
        new Promise<"timeout">((r) => timer = setTimeout(() => r("timeout"), left)),
      ]).finally(() => clearTimeout(timer));
      if (n === null || n === "timeout") return null;
      const next = new Uint8Array(buf.length + n);
      next.set(buf);
      next.set(chunk.subarray(0, n), buf.length);
      buf = next;
    }
    return buf;
  };

  const serveRaw = async (conn: Deno.Conn, first: Uint8Array, deadline: number) => {
    let buf = first;
    while (true) {
      const r = decodeHeader(buf);
      if (r.kind === "incomplete") {
        const more = await readAtLeast(conn, buf, Math.min(r.needed, MAX_HEADER_LENGTH), deadline);
        if (!more) {
          log.log(0, "-", `raw ${peer(conn)}: no complete header, closing`);
          return;
        }
        buf = more;
        continue;
      }
      const client = connEndpoint(
        conn,
        r.kind === "ok" ? buf.subarray(r.length) : new Uint8Array(0),
      );
      if (r.kind === "error") {
        log.log(0, "-", `raw ${peer(conn)}: bad request (${r.error}: ${r.message})`);
        await client.reject(Status.BadRequest).catch(() => {});
        return;
      }
      busy();
      try {
        await handleRequest(r.header, client, ctx, `raw ${peer(conn)}`);
      } finally {
        idle();
      }
      return;
    }
  };

  /**
   * Reads and checks the Token block (PROTOCOL.md §0). Returns the bytes after it, or null when
   * the connection must be closed (one log line said why).
   */
  const authenticate = async (conn: Deno.Conn, deadline: number): Promise<Uint8Array | null> => {
    let buf: Uint8Array = new Uint8Array(0);
    while (true) {
      const r = decodeAuth(buf);
      if (r.kind === "ok") {
        if (tokensEqual(r.token, opts.token)) return buf.subarray(r.length);
        log.log(0, "-", `connection ${peer(conn)}: wrong token, closing`);
        return null;
      }
      if (r.kind === "error") {
        log.log(0, "-", `connection ${peer(conn)}: ${r.message}, closing`);
        return null;
      }
      // One byte more at least, so a client without a Token block is refused at its first byte.
      const more = await readAtLeast(conn, buf, buf.length + 1, deadline);
      if (!more) {
        log.log(
          0,
          "-",
          `connection ${
            peer(conn)
          }: incomplete token (${buf.length} of ${r.needed} bytes), closing`,
        );
        return null;
      }
      buf = more;
    }
  };

  const serveTunnel = async (conn: Deno.Conn, rest: Uint8Array) => {
    const remote = peer(conn);
    const via = `tunnel ${remote}`; // one string for all the session's streams
    busy();
    const session = new Session(prefixedTransport(rest, connTransport(conn)), {
      role: "server",
      maxStreams,
      receiveBudget: AGENT_RECEIVE_BUDGET,
      // We ping a third of the timeout apart, so a live client is never mistaken for a dead one.
      pingIntervalMs: Math.max(1, Math.floor(opts.pingTimeoutMs / 3)),
      pingTimeoutMs: opts.pingTimeoutMs,
      log: (line) => log.log(2, "-", `session ${remote}: ${line}`),
      onStream: (stream: Stream) => {
        void handleHeaderBytes(stream.header, streamEndpoint(stream), ctx, via);
      },
    });
    sessions.add(session);
    log.log(1, "-", `session ${remote}: open`);
    try {
      const reason = await session.closed;
      log.log(1, "-", `session ${remote}: closed (${reason})`);
    } finally {
      sessions.delete(session);
      idle();
    }
  };

  let open = 0;
  const serveConn = async (conn: Deno.Conn) => {
    if (open >= MAX_CONNECTIONS) {
      log.log(0, "-", `connection ${peer(conn)}: over ${MAX_CONNECTIONS} connections, closing`);
      conn.close();
      return;
    }
    open++;
    conns.add(conn);
    let keep = false;
    try {
      try {
        (conn as Deno.TcpConn).setNoDelay(true);
      } catch {
        // not fatal
      }
      const deadline = Date.now() + SNIFF_TIMEOUT_MS;
      const rest = await authenticate(conn, deadline);
      if (!rest) return;
      const first = await readAtLeast(conn, rest, 1, deadline);
      if (!first) return;
      if (first[0] === 0) {
        await serveRaw(conn, first, deadline);
        return;
      }
      const pre = await readAtLeast(conn, first, PREFACE.length, deadline);
      if (!pre || !PREFACE.every((b, i) => pre[i] === b)) {
        log.log(
          0,
          "-",
          `connection ${peer(conn)}: neither a Header nor the tunnel preface, closing`,
        );
        return;
      }
      keep = true; // the Session owns and closes the connection
      conns.delete(conn);
      await serveTunnel(conn, pre.subarray(PREFACE.length));
    } catch (e) {
      log.log(1, "-", `connection: ${e instanceof Error ? e.message : e}`);
    } finally {
      open--;
      conns.delete(conn);
      if (!keep) {
        try {
          conn.close();
        } catch {
          // closed
        }
      }
    }
  };

  (async () => {
    try {
      for await (const conn of listener) {
        if (stopped) {
          conn.close();
          break;
        }
        serveConn(conn);
      }
    } catch (e) {
      if (!stopped) stop(`listener failed: ${e}`, true);
    }
  })();

  // The health port carries nothing: every connection is closed at once (a tcpSocket probe
  // only needs the connect to succeed).
  if (health) {
    const h = health;
    (async () => {
      try {
        for await (const conn of h) conn.close();
      } catch (e) {
        if (!stopped) stop(`health listener failed: ${e}`, true);
      }
    })();
  }

  return {
    addr: listener.addr as Deno.NetAddr,
    healthAddr: health?.addr as Deno.NetAddr | undefined,
    done,
    close: (reason = "closed") => stop(reason),
  };
}
