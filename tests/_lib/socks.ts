/**
 * Test helpers for the proxy: a fake `openStream` that plays the agent
 * locally (dials loopback only, answers with agent statuses), a local HTTP
 * server, a TCP echo server and a UDP "DNS" responder. Network rule: only
 * 127.0.0.0/8 and ::1 are ever dialled; everything else is refused with a
 * status, never contacted.
 *
 * @module
 */

import assert from "node:assert/strict";
import { decodeHeader } from "../../src/protocol/header.ts";
import { Status } from "../../src/protocol/status.ts";
import { encodeUdpFrame, UdpFrameDecoder } from "../../src/protocol/udp.ts";
import type { RelayStream } from "../../src/forward/pipe.ts";
import { type ProxyOptions, type ProxyServer, startProxy } from "../../src/proxy/server.ts";
import { Session, type Stream } from "../../src/mux/mod.ts";
import { prefixedTransport, type Transport } from "../../src/mux/mod.ts";
import { memoryTransportPair } from "./memory_transport.ts";
import { PREFACE } from "../../src/protocol/mux.ts";
import { startTcpEcho, type TcpEcho } from "./echo.ts";
import { curlNoProxy, readAll, writeAll } from "./net.ts";

/** What the fake agent's `openStream` rejects with (like `StreamRejectedError`). */
export class FakeRejectedError extends Error {
  /** Agent status (src/protocol/status.ts). */
  readonly status: number;
  constructor(status: number) {
    super(`stream rejected with status ${status}`);
    this.name = "StreamRejectedError";
    this.status = status;
  }
}

/** A record of one `openStream` call. */
export interface OpenRecord {
  protocol: "tcp" | "udp";
  destination: string;
  outcome: "ok" | number;
}

/** A fake agent: an `openStream` implementation plus what it saw. */
export interface FakeAgent {
  openStream: (header: Uint8Array) => Promise<RelayStream>;
  opened: OpenRecord[];
  /** Streams currently open (not yet ended both ways). */
  readonly live: number;
  /** Closes every stream it opened. */
  closeAll(): void;
}

function isLoopback(ip: string): boolean {
  return /^127\.\d+\.\d+\.\d+$/.test(ip) || ip === "::1";
}

/**
 * Creates a fake agent. `hosts` maps hostnames to loopback IPs (the fake
 * "cluster DNS"); unknown names get NoSuchHost, non-loopback IPs get
 * NetworkUnreachable (and are never contacted). With `dialIps: false`, every
 * IP destination is refused that way (only mapped names are dialled).
 */
export function fakeAgent(
  hosts: Record<string, string> = {},
  opts: { dialIps?: boolean } = {},
): FakeAgent {
  const dialIps = opts.dialIps ?? true;
  const opened: OpenRecord[] = [];
  const closers = new Set<() => void>();
  const agent: FakeAgent = {
    opened,
    get live() {
      return closers.size;
    },
    closeAll() {
      for (const c of [...closers]) c();
    },
    async openStream(bytes: Uint8Array): Promise<RelayStream> {
      const r = decodeHeader(bytes);
      if (r.kind !== "ok" || r.length !== bytes.length) {
        throw new FakeRejectedError(Status.BadRequest);
      }
      const h = r.header;
      const a = h.address;
      const host = a.type === "hostname" ? a.name : a.ip;
      const shown = a.type === "ipv6" ? `[${a.ip}]:${h.port}` : `${host}:${h.port}`;
      const rec: OpenRecord = { protocol: h.protocol, destination: shown, outcome: "ok" };
      opened.push(rec);
      const fail = (s: number): never => {
        rec.outcome = s;
        throw new FakeRejectedError(s);
      };
      let ip: string;
      if (a.type === "hostname") {
        const mapped = hosts[a.name];
        if (!mapped) return fail(Status.NoSuchHost);
        ip = mapped;
      } else {
        if (!dialIps) return fail(Status.NetworkUnreachable);
        ip = a.ip;
      }
      if (!isLoopback(ip)) return fail(Status.NetworkUnreachable);
      if (h.protocol === "tcp") {
        let conn: Deno.TcpConn;
        try {
          conn = await Deno.connect({ hostname: ip, port: h.port });
        } catch (err) {
          if (err instanceof Deno.errors.ConnectionRefused) return fail(Status.ConnectionRefused);
          return fail(Status.UnknownError);
        }
        return tcpStream(conn, closers);
      }
      return udpStream(ip, h.port, closers);
    },
  };
  return agent;
}

function tcpStream(conn: Deno.TcpConn, closers: Set<() => void>): RelayStream {
  let closed = false;
  let readDone = false;
  let writeDone = false;
  const close = () => {
    if (closed) return;
    closed = true;
    closers.delete(close);
    try {
      conn.close();
    } catch { /* ignore */ }
  };
  closers.add(close);
  const maybeClose = () => {
    if (readDone && writeDone) close();
  };
  return {
    async read() {
      if (closed) throw new Error("stream reset");
      const buf = new Uint8Array(65536);
      const n = await conn.read(buf);
      if (n === null) {
        readDone = true;
        maybeClose();
        return null;
      }
      return buf.slice(0, n);
    },
    async write(data) {
      let off = 0;
      while (off < data.length) off += await conn.write(data.subarray(off));
    },
    async closeWrite() {
      if (closed || writeDone) return;
      writeDone = true;
      await conn.closeWrite();
      maybeClose();
    },
    reset() {
      close();
    },
  };
}

function udpStream(ip: string, port: number, closers: Set<() => void>): RelayStream {
  const sock = Deno.listenDatagram({
    transport: "udp",
    hostname: ip === "::1" ? "::1" : "127.0.0.1",
    port: 0,
  });
  const decoder = new UdpFrameDecoder();
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    closers.delete(close);
    try {
      sock.close();
    } catch { /* ignore */ }
  };
  closers.add(close);
  return {
    async read() {
      if (closed) return null;
      try {
        const [data] = await sock.receive();
        return encodeUdpFrame(data);
      } catch {
        return null;
      }
    },
    async write(chunk) {
      for (const dg of decoder.push(chunk)) {
        await sock.send(dg, { transport: "udp", hostname: ip, port });
      }
    },
    closeWrite() {
      close();
      return Promise.resolve();
    },
    reset() {
      close();
    },
  };
}

/** A local HTTP server answering `GET /size/N` with N deterministic bytes and `/` with "hello". */
export function startHttpServer(): { port: number; server: Deno.HttpServer<Deno.NetAddr> } {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (req) => {
      const url = new URL(req.url);
      const m = /^\/size\/(\d+)$/.exec(url.pathname);
      if (m) return new Response(patternBytes(Number(m[1])));
      if (req.method === "POST") {
        const body = new Uint8Array(await req.arrayBuffer());
        return new Response(await sha256Hex(body));
      }
      return new Response(`hello via ${req.headers.get("host")}\n`);
    },
  );
  return { port: server.addr.port, server };
}

/** Written by the echo server after it saw EOF (proves half-close reached it). */
export const ECHO_EOF_TRAILER = new TextEncoder().encode("<eof seen>");

/** A TCP echo server that echoes until EOF, then writes {@link ECHO_EOF_TRAILER} and half-closes. */
export function startEchoServer(): TcpEcho {
  return startTcpEcho("127.0.0.1", ECHO_EOF_TRAILER);
}

/** A UDP responder: answers each datagram with a copy whose byte 2 has the DNS QR bit set. */
export function startUdpResponder(
  hostname = "127.0.0.1",
): { port: number; received: number; close: () => Promise<void> } {
  const sock = Deno.listenDatagram({ transport: "udp", hostname, port: 0 });
  const state = { received: 0 };
  const loop = (async () => {
    for (;;) {
      try {
        const [data, from] = await sock.receive();
        state.received++;
        const reply = data.slice();
        if (reply.length > 2) reply[2] |= 0x80;
        await sock.send(reply, from);
      } catch {
        return;
      }
    }
  })();
  return {
    port: (sock.addr as Deno.NetAddr).port,
    get received() {
      return state.received;
    },
    async close() {
      sock.close();
      await loop;
    },
  };
}

/** Deterministic test bytes. */
export function patternBytes(n: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  let x = 0x12345678;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** SHA-256 hex. */
export async function sha256Hex(data: Uint8Array): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>);
  return [...new Uint8Array(d)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Runs curl with args (20 s at most, environment proxies ignored). */
export function curl(args: string[]): ReturnType<typeof curlNoProxy> {
  return curlNoProxy(args, 20);
}

/**
 * Sends `data` through `conn` to a {@link startEchoServer} echo, half-closes, and asserts that
 * exactly `data` came back (SHA-256), followed by {@link ECHO_EOF_TRAILER} (the server saw our EOF).
 */
export async function assertEchoed(conn: Deno.Conn, data: Uint8Array, label?: string) {
  const reading = readAll(conn);
  await writeAll(conn, data);
  await conn.closeWrite();
  const back = await reading;
  assert.equal(back.length, data.length + ECHO_EOF_TRAILER.length, label);
  assert.equal(await sha256Hex(back.subarray(0, data.length)), await sha256Hex(data), label);
  assert.deepEqual(back.subarray(data.length), ECHO_EOF_TRAILER, label);
}

/**
 * Sends `bytes` in one write to the proxy on `port` (127.0.0.1); returns everything it sends
 * back until it closes the connection.
 */
export async function proxyExchange(port: number, bytes: Uint8Array): Promise<Uint8Array> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await writeAll(conn, bytes);
  const out = await readAll(conn);
  conn.close();
  return out;
}

/** {@link proxyExchange} of a SOCKS5 greeting (no authentication) followed by `request`. */
export function socksExchange(port: number, request: number[]): Promise<Uint8Array> {
  return proxyExchange(port, new Uint8Array([5, 1, 0, ...request]));
}

/** {@link proxyExchange} of an HTTP request given as text; returns the answer as text. */
export async function httpExchange(port: number, request: string): Promise<string> {
  return new TextDecoder().decode(await proxyExchange(port, new TextEncoder().encode(request)));
}

/**
 * Starts a proxy on a random port (of 127.0.0.1 unless `opts.hostname` says otherwise) that
 * collects its log lines, and runs `fn` with both. A watchdog closes the proxy and calls `abort`
 * (which tears down the agent side) after `watchdogMs`, so a hang ends blocked reads and fails
 * the test instead of hanging the run.
 */
export async function withWatchedProxy(
  opts: Omit<ProxyOptions, "hostname" | "port" | "log" | "verbose"> & { hostname?: string },
  watchdogMs: number,
  abort: () => void,
  fn: (proxy: ProxyServer, logs: string[]) => Promise<void>,
): Promise<void> {
  const logs: string[] = [];
  const proxy = await startProxy({
    ...opts,
    hostname: opts.hostname ?? "127.0.0.1",
    port: 0,
    log: (l) => logs.push(l),
    verbose: 1,
  });
  let fired = false;
  const watchdog = setTimeout(() => {
    fired = true;
    void proxy.close();
    abort();
  }, watchdogMs);
  try {
    await fn(proxy, logs);
    assert.ok(!fired, "watchdog fired: the test hung and was torn down");
  } finally {
    await proxy.close();
    clearTimeout(watchdog);
  }
}

/** A fake agent behind a real tunnel Session (client and server over an in-memory transport). */
export interface SessionAgent {
  /** `Session.openStream` of the client side. */
  openStream: (header: Uint8Array) => Promise<Stream>;
  /** The fake agent serving the server side (what it dialled). */
  inner: FakeAgent;
  /** Closes both sessions and every dialled connection. */
  close(): Promise<void>;
}

/**
 * Runs {@link fakeAgent} behind a server-role Session, the way agent.ts serves
 * a tunnel: each OPEN is dialled, then accepted (STATUS 0) or rejected with
 * the agent status; bytes are pumped both ways with half-close.
 */
export function sessionAgent(
  hosts: Record<string, string> = {},
  opts: { dialIps?: boolean } = {},
): SessionAgent {
  const inner = fakeAgent(hosts, opts);
  const [clientSide, serverSide] = memoryTransportPair();
  const pumps = new Set<Promise<void>>();
  const serve = (transport: Transport) =>
    new Session(transport, {
      role: "server",
      onStream: (stream) => {
        const p = (async () => {
          let target: RelayStream;
          try {
            target = await inner.openStream(stream.header);
          } catch (err) {
            const s = (err as { status?: number }).status;
            stream.reject(typeof s === "number" && s > 0 ? s : Status.UnknownError);
            return;
          }
          stream.accept();
          await Promise.all([pump(stream, target), pump(target, stream)]);
        })();
        pumps.add(p);
        p.finally(() => pumps.delete(p));
      },
    });
  // Like agent.ts: consume the PREFACE, then serve a server-role Session on the rest.
  const serverReady = (async () => {
    let got = new Uint8Array(0);
    while (got.length < PREFACE.length) {
      const chunk = await serverSide.read();
      if (chunk === null) throw new Error("tunnel closed before the preface");
      const next = new Uint8Array(got.length + chunk.length);
      next.set(got);
      next.set(chunk, got.length);
      got = next;
    }
    if (!got.subarray(0, PREFACE.length).every((b, i) => b === PREFACE[i])) {
      throw new Error("bad preface");
    }
    return serve(prefixedTransport(got.slice(PREFACE.length), serverSide));
  })();
  const client = new Session(clientSide, { role: "client" });
  return {
    inner,
    openStream: (h) => client.openStream(h),
    async close() {
      client.close();
      const server = await serverReady.catch(() => null);
      server?.close();
      serverSide.close();
      inner.closeAll();
      await Promise.all([client.closed, server?.closed]);
      await Promise.all([...pumps]);
    },
  };
}

async function pump(from: RelayStream, to: RelayStream): Promise<void> {
  try {
    for (;;) {
      const chunk = await from.read();
      if (chunk === null) break;
      await to.write(chunk);
    }
    await to.closeWrite();
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    try {
      from.reset(reason);
    } catch { /* ignore */ }
    try {
      to.reset(reason);
    } catch { /* ignore */ }
  }
}

/**
 * Receives one datagram; if none arrives within `ms` (a safety net against a
 * hang, not a speed check) the socket is closed and this throws.
 */
export async function receiveOrFail(
  sock: Deno.DatagramConn,
  ms = 20_000,
): Promise<Uint8Array> {
  let timedOut = false;
  const t = setTimeout(() => {
    timedOut = true;
    sock.close();
  }, ms);
  try {
    const [data] = await sock.receive();
    return data;
  } catch (err) {
    if (timedOut) throw new Error(`no datagram within ${ms} ms`);
    throw err;
  } finally {
    clearTimeout(t);
  }
}
