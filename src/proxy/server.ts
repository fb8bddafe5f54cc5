/**
 * `kubectl relay proxy`: a SOCKS5 (RFC 1928, no-auth) and HTTP proxy server
 * whose connections are dialled by the agent inside the cluster. The protocol
 * is detected from the first byte: 0x05 is SOCKS5, 0x04 (SOCKS4) is refused,
 * anything else is read as an HTTP proxy request (`CONNECT host:port`, or an
 * absolute-form `GET http://host/...`).
 *
 * For each CONNECT the proxy builds a Header and calls the injected
 * `openStream`; the agent's status becomes the SOCKS reply code or HTTP
 * status. UDP ASSOCIATE is supported (see udp.ts).
 *
 * @module
 */

import { type Address, formatAddress, hostPort, parseAddress } from "../protocol/addr.ts";
import { encodeHeader, formatDestination, type Header } from "../protocol/header.ts";
import { ByteReader, LimitExceededError } from "./io.ts";
import { errorText } from "../errors.ts";
import { relay, type RelayStream, writeAll } from "../forward/pipe.ts";
import {
  HTTP_CONNECT_OK,
  httpErrorResponse,
  MAX_HTTP_HEAD,
  parseHttpProxyRequest,
} from "./http.ts";
import { dialErrorMessage, httpStatusFor, socksReplyFor } from "./status.ts";
import { UdpAssociation } from "./udp.ts";
import {
  Command,
  decodeSocksAddress,
  encodeReply,
  Method,
  Reply,
  SOCKS_VERSION,
  socksAddressFromIp,
  type SocksDestination,
} from "./wire.ts";

/** How a proxy serves: where streams come from, where lines go. */
export interface ProxyServeOptions {
  /**
   * Opens a tunnel stream for a Header (raw Header bytes). Resolves once the
   * agent accepted it; rejects with an error carrying a numeric `status`
   * (`StreamRejectedError`) when the agent refused, or any other error when the
   * tunnel failed. `Stream` from src/mux fits {@link RelayStream}.
   */
  openStream: (header: Uint8Array) => Promise<RelayStream>;
  /** Log sink for progress lines (one line per call, no newline). Default: `console.log`. */
  log?: (line: string) => void;
  /** Sink for per-connection errors (`error: dial tcp redis:6379: connection refused`). Default: `log`. */
  logError?: (line: string) => void;
  /** Verbosity: ≥1 logs `Handling connection for HOST:PORT` per connection. Default 0. */
  verbose?: number;
  /** UDP ASSOCIATE flows idle this long are closed. Default 60 000 ms. */
  udpIdleMs?: number;
  /** A client must finish its handshake within this. Default 30 000 ms. */
  handshakeTimeoutMs?: number;
}

/** Options for {@link startProxy}: where to listen, and how to serve. */
export interface ProxyOptions extends ProxyServeOptions {
  /** Address to listen on (TCP, and the UDP relay sockets). */
  hostname: string;
  /** TCP port to listen on (0 = any free port). */
  port: number;
}

/** A proxy's listening socket, bound but not served yet (connections wait in the kernel). */
export interface BoundProxy {
  /** The bound TCP address. */
  readonly addr: Deno.NetAddr;
  /** Starts accepting connections. Once. */
  serve(opts: ProxyServeOptions): ProxyServer;
  /** Releases the socket without serving it. */
  close(): void;
}

/** A running proxy. */
export interface ProxyServer {
  /** The bound TCP address. */
  readonly addr: Deno.NetAddr;
  /** Stops accepting connections; open ones go on (until close()). */
  stopAccepting(): void;
  /** Client connections in progress (UDP associations count by their control connection). */
  readonly active: number;
  /** Stops listening and ends every connection and UDP association; resolves when all ended. */
  close(): Promise<void>;
}

/** The startup line, kubectl style: `Proxy listening on 127.0.0.1:1080 (SOCKS5, HTTP CONNECT)`. */
export function proxyListeningMessage(addr: Deno.NetAddr): string {
  return `Proxy listening on ${hostPort(addr.hostname, addr.port)} (SOCKS5, HTTP CONNECT)`;
}

/**
 * Binds the proxy's TCP socket. Throws (like `Deno.listen`, e.g. `Deno.errors.AddrInUse`) if
 * the address cannot be bound.
 */
export function bindProxy(hostname: string, port: number): BoundProxy {
  const listener = Deno.listen({ hostname, port, transport: "tcp" });
  let served = false;
  return {
    addr: listener.addr,
    serve(opts) {
      if (served) throw new Error(`${hostPort(hostname, listener.addr.port)} is served already`);
      served = true;
      return new Proxy(listener, opts);
    },
    close() {
      try {
        listener.close();
      } catch { /* already closed */ }
    },
  };
}

/**
 * Binds and serves a proxy. It does not print {@link proxyListeningMessage}; the
 * caller does, once every listener is up. Throws (like `Deno.listen`, e.g.
 * `Deno.errors.AddrInUse`) if the address cannot be bound.
 */
export function startProxy(opts: ProxyOptions): Promise<ProxyServer> {
  return Promise.resolve(bindProxy(opts.hostname, opts.port).serve(opts));
}

class Proxy implements ProxyServer {
  readonly #listener: Deno.Listener<Deno.TcpConn, Deno.NetAddr>;
  readonly #opts: ProxyServeOptions;
  readonly #conns = new Set<Deno.Conn>();
  readonly #udp = new Set<UdpAssociation>();
  readonly #streams = new Set<RelayStream>();
  readonly #tasks = new Set<Promise<void>>();
  readonly #acceptLoop: Promise<void>;
  #accepting = true;
  #closing = false;

  constructor(listener: Deno.Listener<Deno.TcpConn, Deno.NetAddr>, opts: ProxyServeOptions) {
    this.#listener = listener;
    this.#opts = opts;
    this.#acceptLoop = this.#accept();
  }

  get addr(): Deno.NetAddr {
    return this.#listener.addr;
  }

  #log(line: string): void {
    (this.#opts.log ?? console.log)(line);
  }

  #error(line: string): void {
    (this.#opts.logError ?? this.#opts.log ?? console.log)(`error: ${line}`);
  }

  get #verbose(): number {
    return this.#opts.verbose ?? 0;
  }

  get active(): number {
    return this.#conns.size;
  }

  stopAccepting(): void {
    if (!this.#accepting) return;
    this.#accepting = false;
    try {
      this.#listener.close();
    } catch { /* already closed */ }
  }

  async close(): Promise<void> {
    if (!this.#closing) {
      this.#closing = true;
      this.stopAccepting();
      for (const c of this.#conns) {
        try {
          c.close();
        } catch { /* already closed */ }
      }
      for (const s of this.#streams) {
        try {
          s.reset("proxy closed");
        } catch { /* already gone */ }
      }
      for (const u of this.#udp) void u.close();
    }
    await this.#acceptLoop;
    while (this.#tasks.size > 0) await Promise.all([...this.#tasks]);
  }

  async #accept(): Promise<void> {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
      } catch (err) {
        if (!this.#accepting || err instanceof Deno.errors.BadResource) return;
        // E.g. too many open files: keep the listener, back off a little.
        this.#error(`accept: ${errorText(err)}`);
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      if (!this.#accepting) {
        conn.close();
        return;
      }
      try {
        conn.setNoDelay(true);
      } catch { /* not fatal */ }
      this.#conns.add(conn);
      const task = this.#handle(conn)
        .catch((err) => {
          if (!this.#closing && this.#verbose >= 2) {
            this.#log(`connection error: ${errorText(err)}`);
          }
        })
        .finally(() => {
          this.#conns.delete(conn);
          try {
            conn.close();
          } catch { /* already closed */ }
        });
      this.#tasks.add(task);
      task.finally(() => this.#tasks.delete(task));
    }
  }

  /** Closes `conn` if the handshake has not finished in time. Returns a cancel function. */
  #handshakeTimer(conn: Deno.Conn): () => void {
    const ms = this.#opts.handshakeTimeoutMs ?? 30_000;
    const t = setTimeout(() => {
      if (this.#verbose >= 2) this.#log("closing connection: handshake timeout");
      try {
        conn.close();
      } catch { /* already closed */ }
    }, ms);
    return () => clearTimeout(t);
  }

  async #handle(conn: Deno.TcpConn): Promise<void> {
    const reader = new ByteReader(conn);
    const cancelTimer = this.#handshakeTimer(conn);
    let handed = false;
    const done = () => {
      if (!handed) {
        handed = true;
        cancelTimer();
      }
    };
    try {
      const first = await reader.peek(1);
      if (first.length === 0) return;
      if (first[0] === SOCKS_VERSION) await this.#socks5(conn, reader, done);
      else if (first[0] === 0x04) {
        // SOCKS4: "request rejected or failed".
        await writeAll(conn, new Uint8Array([0, 0x5b, 0, 0, 0, 0, 0, 0]));
      } else await this.#http(conn, reader, done);
    } finally {
      done();
    }
  }

  // ---- SOCKS5 -------------------------------------------------------------

  async #socks5(conn: Deno.TcpConn, reader: ByteReader, done: () => void): Promise<void> {
    // Greeting: VER NMETHODS METHODS...
    const greet = await reader.readExact(2);
    if (!greet) return;
    const methods = greet[1] > 0 ? await reader.readExact(greet[1]) : new Uint8Array(0);
    if (!methods) return;
    if (!methods.includes(Method.NoAuth)) {
      await writeAll(conn, new Uint8Array([SOCKS_VERSION, Method.NoAcceptable]));
      return;
    }
    await writeAll(conn, new Uint8Array([SOCKS_VERSION, Method.NoAuth]));

    // Request: VER CMD RSV ATYP DST.ADDR DST.PORT
    const head = await reader.readExact(3);
    if (!head) return;
    if (head[0] !== SOCKS_VERSION) {
      await writeAll(conn, encodeReply(Reply.GeneralFailure));
      return;
    }
    const cmd = head[1];
    if (cmd !== Command.Connect && cmd !== Command.UdpAssociate) {
      await writeAll(conn, encodeReply(Reply.CommandNotSupported));
      return;
    }
    const dest = await this.#readSocksAddress(reader);
    if (typeof dest === "number") {
      if (dest >= 0) await writeAll(conn, encodeReply(dest));
      return;
    }
    // The request is complete: from here on, waiting is on the agent, not the client.
    done();
    if (cmd === Command.UdpAssociate) return await this.#udpAssociate(conn, reader, dest);

    const stream = await this.#dial(
      conn,
      dest,
      () => encodeReply(Reply.GeneralFailure),
      (err) => encodeReply(socksReplyFor(err)),
    );
    if (!stream) return;
    try {
      await writeAll(conn, encodeReply(Reply.Succeeded));
    } catch (err) {
      stream.reset(`local connection: ${errorText(err)}`);
      return;
    }
    await this.#relay(conn, stream, reader.leftover());
  }

  /**
   * Opens a TCP stream to `dest` through the agent, logging it; on failure logs the dial error,
   * writes the protocol's error reply and returns undefined.
   */
  async #dial(
    conn: Deno.Conn,
    dest: SocksDestination,
    invalidReply: () => Uint8Array,
    errorReply: (err: unknown, message: string) => Uint8Array,
  ): Promise<RelayStream | undefined> {
    const header = this.#header("tcp", dest);
    if (!header) {
      this.#error(`dial tcp ${describeDestination(dest)}: invalid destination`);
      await writeAll(conn, invalidReply());
      return undefined;
    }
    const desc = formatDestination(header.header);
    if (this.#verbose >= 1) this.#log(`Handling connection for ${desc}`);
    try {
      return await this.#opts.openStream(header.bytes);
    } catch (err) {
      const msg = dialErrorMessage("tcp", desc, err);
      this.#error(msg);
      await writeAll(conn, errorReply(err, msg)).catch(() => {});
      return undefined;
    }
  }

  /** Relays a connection, tracking the stream so that close() can reset it. */
  async #relay(conn: Deno.Conn, stream: RelayStream, leftover: Uint8Array): Promise<void> {
    if (this.#closing) {
      stream.reset("proxy closed");
      return;
    }
    this.#streams.add(stream);
    try {
      await relay(conn, stream, leftover);
    } finally {
      this.#streams.delete(stream);
    }
  }

  /** Reads ATYP DST.ADDR DST.PORT; returns a reply code to send on error (-1 = EOF, send nothing). */
  async #readSocksAddress(reader: ByteReader): Promise<SocksDestination | number> {
    let want = 1;
    for (;;) {
      const buf = await reader.peek(want);
      if (buf.length < want) return -1;
      const r = decodeSocksAddress(buf);
      if (r.kind === "error") return r.reply;
      if (r.kind === "ok") {
        await reader.readExact(r.length);
        return r.destination;
      }
      want = r.needed;
    }
  }

  async #udpAssociate(
    conn: Deno.TcpConn,
    reader: ByteReader,
    clientDest: SocksDestination,
  ): Promise<void> {
    const local = conn.localAddr as Deno.NetAddr;
    const remote = conn.remoteAddr as Deno.NetAddr;
    let assoc: UdpAssociation;
    try {
      assoc = new UdpAssociation({
        hostname: local.hostname,
        clientIp: remote.hostname,
        clientPort: clientDest.port,
        idleMs: this.#opts.udpIdleMs ?? 60_000,
        log: (l) => this.#log(l),
        logError: (l) => this.#error(l),
        verbose: this.#verbose,
        describe: (d) => describeDestination(d),
        openStream: (d) => {
          const h = this.#header("udp", d);
          if (!h) return Promise.reject(new TypeError("invalid destination"));
          return this.#opts.openStream(h.bytes);
        },
      });
    } catch (err) {
      this.#error(`UDP ASSOCIATE: ${errorText(err)}`);
      await writeAll(conn, encodeReply(Reply.GeneralFailure));
      return;
    }
    this.#udp.add(assoc);
    try {
      if (this.#closing) return;
      const bound = assoc.addr;
      await writeAll(
        conn,
        encodeReply(Reply.Succeeded, {
          address: socksAddressFromIp(bound.hostname),
          port: bound.port,
        }),
      );
      if (this.#verbose >= 2) {
        this.#log(
          `UDP association for ${hostPort(remote.hostname, remote.port)} on port ${bound.port}`,
        );
      }
      // The association lives until the control connection ends.
      reader.leftover();
      const buf = new Uint8Array(1024);
      try {
        while ((await conn.read(buf)) !== null) { /* discard */ }
      } catch { /* closed */ }
    } finally {
      this.#udp.delete(assoc);
      await assoc.close();
    }
  }

  /** Builds a Header for a destination; null if the destination cannot be encoded. */
  #header(
    protocol: "tcp" | "udp",
    dest: SocksDestination,
  ): { header: Header; bytes: Uint8Array } | null {
    const address: Address = dest.address.type === "hostname"
      ? parseAddress(dest.address.name)
      : dest.address;
    const header: Header = {
      requestId: crypto.randomUUID(),
      protocol,
      port: dest.port,
      address,
    };
    try {
      return { header, bytes: encodeHeader(header) };
    } catch {
      return null;
    }
  }

  // ---- HTTP ---------------------------------------------------------------

  async #http(conn: Deno.TcpConn, reader: ByteReader, done: () => void): Promise<void> {
    let head: Uint8Array | null;
    try {
      head = await reader.readUntil(new TextEncoder().encode("\r\n\r\n"), MAX_HTTP_HEAD);
    } catch (err) {
      if (err instanceof LimitExceededError) {
        await writeAll(
          conn,
          httpErrorResponse(431, "Request Header Fields Too Large", "request head too large"),
        );
        return;
      }
      throw err;
    }
    if (!head) return;
    done();
    const req = parseHttpProxyRequest(head);
    if (req.kind === "error") {
      await writeAll(conn, httpErrorResponse(req.code, req.reason, req.message));
      return;
    }
    const stream = await this.#dial(
      conn,
      { address: { type: "hostname", name: req.host }, port: req.port },
      () => httpErrorResponse(400, "Bad Request", `invalid host ${req.host}`),
      (err, msg) => {
        const st = httpStatusFor(err);
        return httpErrorResponse(st.code, st.reason, msg);
      },
    );
    if (!stream) return;
    if (req.kind === "connect") {
      try {
        await writeAll(conn, HTTP_CONNECT_OK);
      } catch (err) {
        stream.reset(`local connection: ${errorText(err)}`);
        return;
      }
      await this.#relay(conn, stream, reader.leftover());
    } else {
      const rest = reader.leftover();
      const first = new Uint8Array(req.head.length + rest.length);
      first.set(req.head, 0);
      first.set(rest, req.head.length);
      await this.#relay(conn, stream, first);
    }
  }
}

/** `host:port` for logs, IPv6 bracketed. */
export function describeDestination(d: SocksDestination): string {
  return hostPort(formatAddress(d.address), d.port);
}
