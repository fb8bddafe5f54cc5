/**
 * kube-proxy-like forwarders: a TCP listener or UDP socket on a Service's clusterIP:port whose
 * connections / datagram flows go to a backend chosen per connection / flow.
 *
 * @module
 */

import { safeClose, serveTcp, type TcpServer } from "./tcp_server.ts";

/** A destination. */
export interface Backend {
  hostname: string;
  port: number;
}

/** Candidate backends for one new connection or flow, in preference order (may be empty). */
export type PickBackends = () => Backend[];

/** A running forwarder. */
export type Forwarder = TcpServer;

/** Options common to both forwarders. */
export interface ForwarderOptions {
  hostname: string;
  port: number;
  pick: PickBackends;
  log?: (line: string) => void;
}

const BUF = 64 * 1024;

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await conn.write(data.subarray(off));
}

/** Copy src → dst until EOF, then half-close dst. Errors end the copy. */
async function pump(src: Deno.Conn, dst: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(BUF);
  try {
    for (;;) {
      const n = await src.read(buf);
      if (n === null) break;
      await writeAll(dst, buf.subarray(0, n));
    }
    await dst.closeWrite().catch(() => {});
  } catch {
    // Either side failed: tear both down.
    safeClose(src);
    safeClose(dst);
  }
}

/** Relay a client connection to the first backend that accepts it. */
async function relay(client: Deno.Conn, opts: ForwarderOptions): Promise<void> {
  let upstream: Deno.Conn | undefined;
  for (const b of opts.pick().slice(0, 3)) {
    try {
      upstream = await Deno.connect({ hostname: b.hostname, port: b.port, transport: "tcp" });
      break;
    } catch (e) {
      opts.log?.(`forward ${opts.hostname}:${opts.port} -> ${b.hostname}:${b.port}: ${e}`);
    }
  }
  if (!upstream) {
    safeClose(client);
    return;
  }
  const up = upstream;
  await Promise.all([pump(client, up), pump(up, client)]);
  safeClose(client);
  safeClose(up);
}

/** Start a TCP forwarder. */
export function startTcpForwarder(opts: ForwarderOptions): Promise<Forwarder> {
  return serveTcp(opts.hostname, opts.port, (conn) => relay(conn, opts));
}

/** Options of the UDP forwarder. */
export interface UdpForwarderOptions extends ForwarderOptions {
  /** A flow with no datagram in either direction for this long is dropped (default 30 s). */
  idleMs?: number;
  /**
   * Whether a flow's backend may still be used (checked at most once a second per flow); a flow
   * whose backend went away (pod deleted in a rollout) moves to a new backend, as conntrack
   * entries of a deleted endpoint are flushed by kube-proxy.
   */
  backendAlive?: (b: Backend) => boolean;
}

interface Flow {
  sock: Deno.DatagramConn;
  backend: Backend;
  last: number;
  checked: number;
  done: Promise<void>;
}

/** Start a UDP forwarder: one upstream socket per client address (a "flow"). */
export function startUdpForwarder(opts: UdpForwarderOptions): Promise<Forwarder> {
  let front: Deno.DatagramConn;
  try {
    front = Deno.listenDatagram({ hostname: opts.hostname, port: opts.port, transport: "udp" });
  } catch (e) {
    return Promise.reject(e);
  }
  const idleMs = opts.idleMs ?? 30_000;
  const flows = new Map<string, Flow>();
  let closed = false;

  const endFlow = (key: string) => {
    const f = flows.get(key);
    if (!f) return;
    flows.delete(key);
    safeClose(f.sock);
  };

  const openFlow = (key: string, client: Deno.NetAddr): Flow | undefined => {
    const backend = opts.pick()[0];
    if (!backend) return undefined;
    const sock = Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
    const now = Date.now();
    const flow: Flow = { sock, backend, last: now, checked: now, done: Promise.resolve() };
    flow.done = (async () => {
      try {
        for (;;) {
          const [data] = await sock.receive();
          flow.last = Date.now();
          await front.send(data, client).catch(() => {});
        }
      } catch {
        // flow socket closed
      }
      if (flows.get(key) === flow) flows.delete(key);
    })();
    flows.set(key, flow);
    return flow;
  };

  const serving = (async () => {
    try {
      for (;;) {
        const [data, addr] = await front.receive();
        const client = addr as Deno.NetAddr;
        const key = `${client.hostname}:${client.port}`;
        const now = Date.now();
        let flow = flows.get(key);
        if (flow && opts.backendAlive && now - flow.checked >= 1000) {
          flow.checked = now;
          if (!opts.backendAlive(flow.backend)) {
            endFlow(key);
            flow = undefined;
          }
        }
        flow ??= openFlow(key, client);
        if (!flow) continue; // no backend: drop, like a Service with no endpoints
        flow.last = now;
        await flow.sock.send(data, {
          transport: "udp",
          hostname: flow.backend.hostname,
          port: flow.backend.port,
        }).catch((e) => opts.log?.(`udp forward to ${flow.backend.hostname}: ${e}`));
      }
    } catch {
      // front closed
    }
  })();

  const sweep = setInterval(() => {
    const now = Date.now();
    for (const [key, f] of flows) if (now - f.last > idleMs) endFlow(key);
  }, Math.max(50, Math.min(5000, idleMs / 2)));

  let closing: Promise<void> | undefined;
  return Promise.resolve({
    port: (front.addr as Deno.NetAddr).port,
    close() {
      closing ??= (async () => {
        if (closed) return;
        closed = true;
        clearInterval(sweep);
        safeClose(front);
        await serving;
        const all = [...flows.values()].map((f) => f.done);
        for (const key of [...flows.keys()]) endFlow(key);
        await Promise.all(all);
      })();
      return closing;
    },
  });
}
