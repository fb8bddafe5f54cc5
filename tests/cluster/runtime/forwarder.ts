/**
 * kube-proxy-like forwarders for a Service's clusterIP:port, with kube-proxy's semantics:
 *
 * - **One endpoint per new TCP connection or UDP flow**, picked at random among the endpoints in
 *   effect (as iptables/nftables mode do). A connect to that endpoint that fails fails the
 *   client's connection: there is **no retry** on another endpoint.
 * - **No endpoint → refused.** kube-proxy installs a REJECT rule: a TCP client gets
 *   `ECONNREFUSED`, a UDP sender gets ICMP port-unreachable (silence for an unconnected socket).
 *   We get exactly that from the kernel by **not having the socket bound** while the Service has
 *   no endpoints: the listener / UDP socket is closed when the endpoint set becomes empty and
 *   bound again when it is not (connections already accepted are not affected, as conntrack
 *   entries are not). Deno cannot reset an accepted connection (no `SO_LINGER 0`), so
 *   accept-then-close, which a client sees as a connection that opened and ended, is not used.
 * - **Propagation delay.** {@link Forwarder.setEndpoints} takes effect after
 *   `propagationDelayMs` (default 1 s), like EndpointSlice changes reaching kube-proxy on a busy
 *   cluster; 0 applies at once (unit tests). Updates apply in order.
 * - A UDP flow is one client address (conntrack entry, idle timeout 30 s). Flows to an endpoint
 *   that is no longer *serving* are flushed (kube-proxy's `CleanStaleEntries`: a terminating pod
 *   that still serves keeps its flows, only new flows avoid it), so the client's next datagram
 *   starts a new flow. With no serving endpoint at all nothing is flushed (but the socket is
 *   closed, see above).
 *
 * One difference remains: a connection whose endpoint refuses is accepted by us first, then
 * closed (the client sees the connection open and end, or a reset if it had sent data) instead
 * of the endpoint's own RST reaching the client through DNAT.
 *
 * @module
 */

import { pipeConns, safeClose } from "./tcp_server.ts";

/** A destination (pod IP and target port). */
export interface Backend {
  hostname: string;
  port: number;
}

/** Default delay before endpoint changes take effect (ms). */
export const DEFAULT_PROPAGATION_DELAY_MS = 1000;

/** Options common to both forwarders. */
export interface ForwarderOptions {
  /** Cluster IP. */
  hostname: string;
  /** Service port (0 = the kernel picks one at the first bind, kept afterwards). */
  port: number;
  /** Delay before {@link Forwarder.setEndpoints} takes effect (default 1000 ms; 0 = at once). */
  propagationDelayMs?: number;
  /** Random number in [0, 1) for the endpoint pick (default Math.random). */
  random?: () => number;
  log?: (line: string) => void;
}

/** Options of the UDP forwarder. */
export interface UdpForwarderOptions extends ForwarderOptions {
  /** A flow with no datagram in either direction for this long is dropped (default 30 s). */
  idleMs?: number;
}

/** A running forwarder. */
export interface Forwarder {
  /** Bound port (the requested one, or the kernel's pick once bound). */
  readonly port: number;
  /** True while the socket is bound (the endpoint set in effect is not empty). */
  readonly listening: boolean;
  /** The endpoints in effect now. */
  readonly endpoints: readonly Backend[];
  /**
   * Replace the endpoints new connections/flows go to, and the serving ones (default: the same;
   * UDP flows to an endpoint that is not serving are flushed). Takes effect after the
   * propagation delay.
   */
  setEndpoints(endpoints: readonly Backend[], serving?: readonly Backend[]): void;
  /** Resolves once the socket is bound/released as the endpoints in effect say. */
  settled(): Promise<void>;
  /** Unbind, drop pending updates, close every connection/flow. */
  close(): Promise<void>;
}

const REBIND_RETRY_MS = 500;

const sameBackend = (a: Backend, b: Backend) => a.hostname === b.hostname && a.port === b.port;

/**
 * Endpoint bookkeeping shared by both forwarders: delayed updates, the set in effect, and
 * binding/unbinding the socket when it becomes non-empty/empty (retrying a failed bind).
 */
abstract class ForwarderBase implements Forwarder {
  #endpoints: readonly Backend[] = [];
  #timers = new Set<ReturnType<typeof setTimeout>>();
  #retry?: ReturnType<typeof setTimeout>;
  #chain: Promise<void> = Promise.resolve();
  #port: number;
  protected closed = false;
  protected readonly log: (line: string) => void;
  readonly #delay: number;
  readonly #random: () => number;

  constructor(protected readonly opts: ForwarderOptions) {
    this.#port = opts.port;
    this.#delay = opts.propagationDelayMs ?? DEFAULT_PROPAGATION_DELAY_MS;
    this.#random = opts.random ?? Math.random;
    this.log = opts.log ?? (() => {});
  }

  get port(): number {
    return this.#port;
  }

  get endpoints(): readonly Backend[] {
    return this.#endpoints;
  }

  abstract get listening(): boolean;

  setEndpoints(endpoints: readonly Backend[], serving: readonly Backend[] = endpoints): void {
    if (this.closed) return;
    const copy = (l: readonly Backend[]) => l.map((b) => ({ hostname: b.hostname, port: b.port }));
    const [eps, srv] = [copy(endpoints), copy(serving)];
    if (this.#delay <= 0) {
      this.#apply(eps, srv);
      return;
    }
    const t = setTimeout(() => {
      this.#timers.delete(t);
      this.#apply(eps, srv);
    }, this.#delay);
    this.#timers.add(t);
  }

  /** One endpoint, at random, for a new connection or flow (undefined if none). */
  protected pick(): Backend | undefined {
    const eps = this.#endpoints;
    if (eps.length === 0) return undefined;
    return eps[Math.min(eps.length - 1, Math.floor(this.#random() * eps.length))];
  }

  #apply(endpoints: Backend[], serving: Backend[]): void {
    if (this.closed) return;
    this.#endpoints = endpoints;
    if (serving.length) this.onServing(serving);
    this.#kick();
  }

  /** Bind or unbind to match the endpoints in effect (serialized; see {@link settled}). */
  #kick(): void {
    this.#chain = this.#chain.then(() => this.#sync()).catch((e) => this.log(`forwarder: ${e}`));
  }

  async #sync(): Promise<void> {
    clearTimeout(this.#retry);
    this.#retry = undefined;
    if (this.closed) return;
    if (this.#endpoints.length === 0) {
      if (this.listening) await this.unbind();
      return;
    }
    if (this.listening) return;
    try {
      this.#port = this.bind(this.#port);
    } catch (e) {
      this.log(`service ${this.opts.hostname}:${this.#port}: cannot bind: ${e} (retrying)`);
      this.#retry = setTimeout(() => this.#kick(), REBIND_RETRY_MS);
    }
  }

  /**
   * Resolves once the socket matches the endpoints in effect (a socket being closed is only
   * released when its pending accept/receive has ended; until then a connect may be reset
   * instead of refused).
   */
  settled(): Promise<void> {
    return this.#chain;
  }

  /** Bind the socket and start serving; returns the bound port. Throws if it cannot bind. */
  protected abstract bind(port: number): number;
  /**
   * Close the socket; resolves once it is released (connections already accepted stay; UDP
   * flows end).
   */
  protected abstract unbind(): Promise<void>;
  /** The serving endpoints changed (flush UDP flows to any other endpoint). */
  protected onServing(_serving: Backend[]): void {}
  /** Close everything else (connections, flows) and wait for the tasks. */
  protected abstract shutdown(): Promise<void>;

  #closing?: Promise<void>;
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.closed = true;
      for (const t of this.#timers) clearTimeout(t);
      this.#timers.clear();
      clearTimeout(this.#retry);
      await this.#chain;
      if (this.listening) await this.unbind();
      await this.shutdown();
    })();
    return this.#closing;
  }
}

class TcpForwarder extends ForwarderBase {
  #listener?: Deno.TcpListener;
  #accepting?: Promise<void>;
  #conns = new Set<Deno.Conn>();
  #inflight = new Set<Promise<void>>();

  get listening(): boolean {
    return this.#listener !== undefined;
  }

  protected bind(port: number): number {
    const l = Deno.listen({ hostname: this.opts.hostname, port, transport: "tcp" });
    this.#listener = l;
    this.#accepting = (async () => {
      try {
        for await (const conn of l) this.#handle(conn);
      } catch {
        // closed
      }
    })();
    return (l.addr as Deno.NetAddr).port;
  }

  protected async unbind(): Promise<void> {
    if (this.#listener) safeClose(this.#listener);
    this.#listener = undefined;
    await this.#accepting;
  }

  #handle(conn: Deno.Conn): void {
    this.#conns.add(conn);
    const p = this.#relay(conn).finally(() => {
      this.#conns.delete(conn);
      this.#inflight.delete(p);
    });
    this.#inflight.add(p);
  }

  async #relay(client: Deno.Conn): Promise<void> {
    const b = this.pick();
    let upstream: Deno.Conn | undefined;
    if (b) {
      try {
        upstream = await Deno.connect({ hostname: b.hostname, port: b.port, transport: "tcp" });
      } catch (e) {
        this.log(`forward ${this.opts.hostname}:${this.port} -> ${b.hostname}:${b.port}: ${e}`);
      }
    }
    if (!upstream || this.closed) {
      if (upstream) safeClose(upstream);
      safeClose(client); // no retry: this connection fails
      return;
    }
    const up = upstream;
    this.#conns.add(up);
    try {
      await pipeConns(client, up);
    } finally {
      this.#conns.delete(up);
    }
  }

  protected async shutdown(): Promise<void> {
    for (const c of this.#conns) safeClose(c);
    await Promise.all(this.#inflight);
  }
}

interface Flow {
  sock: Deno.DatagramConn;
  backend: Backend;
  last: number;
  done: Promise<void>;
}

class UdpForwarder extends ForwarderBase {
  #front?: Deno.DatagramConn;
  #serving?: Promise<void>;
  #flows = new Map<string, Flow>();
  #sweep: ReturnType<typeof setInterval>;
  readonly #idleMs: number;

  constructor(opts: UdpForwarderOptions) {
    super(opts);
    this.#idleMs = opts.idleMs ?? 30_000;
    this.#sweep = setInterval(() => {
      const now = Date.now();
      for (const [key, f] of this.#flows) if (now - f.last > this.#idleMs) this.#endFlow(key);
    }, Math.max(50, Math.min(5000, this.#idleMs / 2)));
  }

  get listening(): boolean {
    return this.#front !== undefined;
  }

  protected bind(port: number): number {
    const front = Deno.listenDatagram({ hostname: this.opts.hostname, port, transport: "udp" });
    this.#front = front;
    this.#serving = this.#serve(front);
    return (front.addr as Deno.NetAddr).port;
  }

  protected async unbind(): Promise<void> {
    if (this.#front) safeClose(this.#front);
    this.#front = undefined;
    // No endpoints: every flow is gone with them.
    for (const key of [...this.#flows.keys()]) this.#endFlow(key);
    await this.#serving;
  }

  protected override onServing(serving: Backend[]): void {
    for (const [key, f] of this.#flows) {
      if (!serving.some((b) => sameBackend(b, f.backend))) this.#endFlow(key);
    }
  }

  #endFlow(key: string): void {
    const f = this.#flows.get(key);
    if (!f) return;
    this.#flows.delete(key);
    safeClose(f.sock);
  }

  #openFlow(key: string, client: Deno.NetAddr, front: Deno.DatagramConn): Flow | undefined {
    const backend = this.pick();
    if (!backend) return undefined;
    const sock = Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
    const flow: Flow = { sock, backend, last: Date.now(), done: Promise.resolve() };
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
      if (this.#flows.get(key) === flow) this.#flows.delete(key);
    })();
    this.#flows.set(key, flow);
    return flow;
  }

  async #serve(front: Deno.DatagramConn): Promise<void> {
    try {
      for (;;) {
        const [data, addr] = await front.receive();
        const client = addr as Deno.NetAddr;
        const key = `${client.hostname}:${client.port}`;
        const flow = this.#flows.get(key) ?? this.#openFlow(key, client, front);
        if (!flow) continue; // cannot happen while bound; dropped like a rejected packet
        flow.last = Date.now();
        await flow.sock.send(data, {
          transport: "udp",
          hostname: flow.backend.hostname,
          port: flow.backend.port,
        }).catch((e) => this.log(`udp forward to ${flow.backend.hostname}: ${e}`));
      }
    } catch {
      // front closed
    }
  }

  protected async shutdown(): Promise<void> {
    clearInterval(this.#sweep);
    const all = [...this.#flows.values()].map((f) => f.done);
    for (const key of [...this.#flows.keys()]) this.#endFlow(key);
    await Promise.all(all);
  }
}

/** A TCP forwarder with no endpoints yet (not bound until {@link Forwarder.setEndpoints}). */
export function createTcpForwarder(opts: ForwarderOptions): Forwarder {
  return new TcpForwarder(opts);
}

/** A UDP forwarder with no endpoints yet (not bound until {@link Forwarder.setEndpoints}). */
export function createUdpForwarder(opts: UdpForwarderOptions): Forwarder {
  return new UdpForwarder(opts);
}
