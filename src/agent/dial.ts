/**
 * Resolving and dialling destinations, and mapping failures to status codes.
 *
 * Hostnames are resolved with `node:dns` `lookup()`, which in Deno calls the system
 * resolver (getaddrinfo): /etc/hosts, and /etc/resolv.conf with its search list and
 * ndots, so cluster names such as `redis.default` work inside a pod. We resolve
 * ourselves (rather than passing the name to `Deno.connect`, which also uses
 * getaddrinfo) for three reasons: UDP needs an address for `send()`, resolve and
 * connect get separate timeouts and statuses, and getaddrinfo's error codes
 * (ENOTFOUND vs EAI_AGAIN) are clearer than Deno's connect error text.
 * `Deno.resolveDns` was not used: it is a separate DNS client (A/AAAA only, no
 * /etc/nsswitch semantics), not the resolver users expect.
 *
 * @module
 */

import { lookup } from "node:dns/promises";
import { errorText } from "../errors.ts";
import { Status } from "../protocol/status.ts";
import { type Address, hostPort } from "../protocol/addr.ts";

/** A dial failure with its status and a detail for the log. */
export class DialError extends Error {
  readonly status: Status;
  constructor(status: Status, message: string) {
    super(message);
    this.name = "DialError";
    this.status = status;
  }
}

/** Resolves a hostname to addresses (system resolver order). */
export type Resolver = (name: string) => Promise<string[]>;

/** Opens a TCP connection (Deno.connect-like). */
export type Connector = (opts: Deno.ConnectOptions) => Promise<Deno.TcpConn>;

/** The system resolver via getaddrinfo. */
export const systemResolver: Resolver = async (name) => {
  const all = await lookup(name, { all: true, verbatim: true });
  return all.map((a) => a.address);
};

/** Maps a getaddrinfo failure to a status. */
export function resolveErrorStatus(e: unknown): Status {
  const code = (e as { code?: unknown } | null)?.code;
  switch (code) {
    case "ENOTFOUND":
    case "EAI_NONAME":
    case "EAI_NODATA":
    case "ENODATA":
      return Status.NoSuchHost;
    case "EAI_AGAIN":
    case "ETIMEOUT":
    case "ETIMEDOUT":
      return Status.ResolveTimeout;
    default:
      return Status.UnknownError;
  }
}

/** Maps a connect/socket failure to a status. */
export function connectErrorStatus(e: unknown): Status {
  if (e instanceof Deno.errors.ConnectionRefused) return Status.ConnectionRefused;
  if (e instanceof Deno.errors.TimedOut) return Status.ConnectTimeout;
  if (e instanceof Deno.errors.NetworkUnreachable) return Status.NetworkUnreachable;
  const msg = errorText(e);
  if (/connection refused/i.test(msg)) return Status.ConnectionRefused;
  if (/timed out/i.test(msg)) return Status.ConnectTimeout;
  if (/network is unreachable|no route to host|host is unreachable/i.test(msg)) {
    return Status.NetworkUnreachable;
  }
  if (/failed to lookup address|name or service not known/i.test(msg)) return Status.NoSuchHost;
  return Status.UnknownError;
}

/**
 * Resolves an Address to IP texts. IPs are returned as is; hostnames go to `resolver`
 * with a timeout. Throws DialError (NoSuchHost, ResolveTimeout, UnknownError).
 */
export async function resolveAddress(
  address: Address,
  timeoutMs: number,
  resolver: Resolver = systemResolver,
): Promise<string[]> {
  if (address.type !== "hostname") return [address.ip];
  // A trailing dot means "absolute": getaddrinfo handles it itself.
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new DialError(Status.ResolveTimeout, `lookup ${address.name}: timeout`)),
      timeoutMs,
    );
  });
  try {
    const ips = await Promise.race([resolver(address.name), timeout]);
    if (ips.length === 0) {
      throw new DialError(Status.NoSuchHost, `lookup ${address.name}: no addresses`);
    }
    return ips;
  } catch (e) {
    if (e instanceof DialError) throw e;
    throw new DialError(resolveErrorStatus(e), `lookup ${address.name}: ${errorText(e)}`);
  } finally {
    clearTimeout(timer);
  }
}

/** Options of {@link dialTcp}. */
export interface DialOptions {
  connectTimeoutMs: number;
  resolveTimeoutMs: number;
  resolver?: Resolver;
  connector?: Connector;
}

/**
 * Resolves and connects to `address:port` over TCP, trying each resolved address in
 * turn within one connect deadline. Sets TCP_NODELAY. Throws DialError.
 */
export async function dialTcp(
  address: Address,
  port: number,
  opts: DialOptions,
): Promise<Deno.TcpConn> {
  const ips = await resolveAddress(address, opts.resolveTimeoutMs, opts.resolver);
  const connector: Connector = opts.connector ?? ((o) => Deno.connect(o));
  const deadline = Date.now() + opts.connectTimeoutMs;
  let last: DialError = new DialError(Status.UnknownError, "no address tried");
  for (const ip of ips) {
    const remaining = deadline - Date.now();
    if (remaining <= 0) {
      last = new DialError(Status.ConnectTimeout, `connect ${hostPort(ip, port)}: timeout`);
      break;
    }
    const ac = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      ac.abort();
    }, remaining);
    try {
      // Passing an IP: no second resolution, no happy-eyeballs reordering.
      const pending = connector({ hostname: ip, port, transport: "tcp", signal: ac.signal });
      const timeout = new Promise<never>((_, reject) =>
        ac.signal.addEventListener("abort", () => reject(new Error("timeout")), { once: true })
      );
      // Some connectors ignore the signal: close a connection that arrives too late.
      pending.then((c) => {
        if (timedOut) c.close();
      }, () => {});
      const conn = await Promise.race([pending, timeout]);
      try {
        conn.setNoDelay(true);
      } catch {
        // not fatal
      }
      return conn;
    } catch (e) {
      last = timedOut
        ? new DialError(Status.ConnectTimeout, `connect ${hostPort(ip, port)}: i/o timeout`)
        : new DialError(connectErrorStatus(e), `connect ${hostPort(ip, port)}: ${errorText(e)}`);
    } finally {
      clearTimeout(timer);
    }
  }
  throw last;
}
