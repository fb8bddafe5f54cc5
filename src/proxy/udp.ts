/**
 * SOCKS5 UDP ASSOCIATE relay (RFC 1928 §7). One UDP socket per association,
 * alive as long as the client's TCP control connection. Each
 * (client address, destination) pair becomes one tunnel stream whose Header
 * says "udp"; datagrams travel as `encodeUdpFrame` frames, replies come back
 * wrapped in the SOCKS UDP header. Idle flows are closed.
 *
 * @module
 */

import { encodeUdpFrame, MAX_DATAGRAM, UdpFrameDecoder } from "../protocol/udp.ts";
import { hostPort } from "../protocol/addr.ts";
import { errorText } from "../errors.ts";
import type { RelayStream } from "../forward/pipe.ts";
import { dialErrorMessage } from "./status.ts";
import { decodeUdpPacket, encodeUdpPacket, type SocksDestination } from "./wire.ts";

/** Datagrams buffered per flow while its stream opens or writes are pending; more are dropped. */
export const MAX_PENDING_DATAGRAMS = 256;

/** Options for {@link UdpAssociation}. */
export interface UdpAssociationOptions {
  /** Address to bind the relay socket to (the address the client reached us on). */
  hostname: string;
  /** Only datagrams from this IP are accepted (the TCP client's address). */
  clientIp: string;
  /** If nonzero, only datagrams from this source port are accepted (from the ASSOCIATE request). */
  clientPort: number;
  /** Opens a UDP stream to the destination. */
  openStream: (dest: SocksDestination) => Promise<RelayStream>;
  /** Formats a destination for logs. */
  describe: (dest: SocksDestination) => string;
  /** Flows idle this long are closed. */
  idleMs: number;
  log: (line: string) => void;
  /** Error sink; the line gets an `error: ` prefix from the caller. */
  logError: (line: string) => void;
  verbose: number;
}

interface Flow {
  key: string;
  client: Deno.NetAddr;
  rawAddress: Uint8Array;
  destination: SocksDestination;
  stream?: RelayStream;
  /** Datagrams waiting for the stream to open. */
  pending: Uint8Array[];
  /** Writes in flight on the stream. */
  inFlight: number;
  writeChain: Promise<void>;
  lastActive: number;
  closed: boolean;
  /** When the flow was half-closed for idleness (0 = not). */
  expiredAt: number;
  done: Promise<void>;
}

/** After an idle half-close, a flow whose stream has not ended within this is reset. */
const EXPIRE_GRACE_MS = 5000;

/** A running UDP relay for one SOCKS association. */
export class UdpAssociation {
  readonly #opts: UdpAssociationOptions;
  readonly #socket: Deno.DatagramConn;
  /** Flows by key that accept new datagrams. */
  readonly #flows = new Map<string, Flow>();
  /** Every flow whose stream may still be running (including idle-expired ones). */
  readonly #all = new Set<Flow>();
  readonly #tasks = new Set<Promise<void>>();
  readonly #timer: ReturnType<typeof setInterval>;
  #closed = false;
  readonly #loop: Promise<void>;

  /** Binds the relay socket and starts receiving. */
  constructor(opts: UdpAssociationOptions) {
    this.#opts = opts;
    this.#socket = Deno.listenDatagram({ transport: "udp", hostname: opts.hostname, port: 0 });
    const tick = Math.max(50, Math.min(5000, Math.floor(opts.idleMs / 2)));
    this.#timer = setInterval(() => this.#expire(), tick);
    this.#loop = this.#receiveLoop();
  }

  /** The relay socket's address (sent to the client as BND.ADDR/BND.PORT). */
  get addr(): Deno.NetAddr {
    return this.#socket.addr as Deno.NetAddr;
  }

  /** Number of live flows. */
  get flowCount(): number {
    return this.#flows.size;
  }

  /** Closes the socket and every flow; resolves when all work has ended. */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      clearInterval(this.#timer);
      try {
        this.#socket.close();
      } catch { /* already closed */ }
      for (const f of [...this.#all]) this.#closeFlow(f, true);
    }
    await this.#loop;
    while (this.#tasks.size > 0) await Promise.all([...this.#tasks]);
  }

  #track(p: Promise<void>): void {
    this.#tasks.add(p);
    p.finally(() => this.#tasks.delete(p));
  }

  async #receiveLoop(): Promise<void> {
    const buf = new Uint8Array(MAX_DATAGRAM + 1);
    while (!this.#closed) {
      let data: Uint8Array;
      let from: Deno.NetAddr;
      try {
        const [d, a] = await this.#socket.receive(buf);
        data = d;
        from = a as Deno.NetAddr;
      } catch (err) {
        if (this.#closed) return;
        // An ICMP error from an earlier reply to a client port that has gone
        // (reported on some platforms): not fatal for the relay.
        if (
          err instanceof Deno.errors.ConnectionReset ||
          err instanceof Deno.errors.ConnectionRefused
        ) continue;
        this.#opts.logError(`UDP relay: ${errorText(err)}`);
        return;
      }
      if (!this.#acceptSource(from)) {
        if (this.#opts.verbose >= 2) {
          this.#opts.log(`dropping datagram from unexpected ${hostPort(from.hostname, from.port)}`);
        }
        continue;
      }
      const pkt = decodeUdpPacket(data);
      if (typeof pkt === "string") {
        if (this.#opts.verbose >= 2) this.#opts.log(`dropping malformed datagram: ${pkt}`);
        continue;
      }
      if (pkt.frag !== 0) {
        if (this.#opts.verbose >= 2) this.#opts.log("dropping fragmented datagram");
        continue;
      }
      this.#send(from, pkt.rawAddress, pkt.destination, pkt.data.slice());
    }
  }

  #acceptSource(from: Deno.NetAddr): boolean {
    if (normalizeIp(from.hostname) !== normalizeIp(this.#opts.clientIp)) return false;
    return this.#opts.clientPort === 0 || from.port === this.#opts.clientPort;
  }

  #send(
    client: Deno.NetAddr,
    rawAddress: Uint8Array,
    destination: SocksDestination,
    payload: Uint8Array,
  ): void {
    const key = `${client.hostname}|${client.port}|${rawAddress.join(",")}`;
    let flow = this.#flows.get(key);
    if (!flow) {
      flow = this.#openFlow(key, client, rawAddress, destination);
    }
    flow.lastActive = Date.now();
    if (!flow.stream) {
      if (flow.pending.length < MAX_PENDING_DATAGRAMS) flow.pending.push(payload);
      return;
    }
    this.#write(flow, payload);
  }

  #write(flow: Flow, payload: Uint8Array): void {
    const stream = flow.stream;
    if (!stream || flow.closed) return;
    if (flow.inFlight >= MAX_PENDING_DATAGRAMS) return; // UDP: drop under backpressure
    flow.inFlight++;
    const frame = encodeUdpFrame(payload);
    flow.writeChain = flow.writeChain.then(async () => {
      try {
        if (!flow.closed) await stream.write(frame);
      } catch (err) {
        if (!flow.closed) {
          this.#opts.logError(
            `UDP flow ${this.#opts.describe(flow.destination)}: ${errorText(err)}`,
          );
          this.#closeFlow(flow, true);
        }
      } finally {
        flow.inFlight--;
      }
    });
  }

  #openFlow(
    key: string,
    client: Deno.NetAddr,
    rawAddress: Uint8Array,
    destination: SocksDestination,
  ): Flow {
    const flow: Flow = {
      key,
      client,
      rawAddress,
      destination,
      pending: [],
      inFlight: 0,
      writeChain: Promise.resolve(),
      lastActive: Date.now(),
      closed: false,
      expiredAt: 0,
      done: Promise.resolve(),
    };
    this.#flows.set(key, flow);
    this.#all.add(flow);
    const desc = this.#opts.describe(destination);
    if (this.#opts.verbose >= 1) this.#opts.log(`Handling connection for ${desc} (UDP)`);
    flow.done = (async () => {
      let stream: RelayStream;
      try {
        stream = await this.#opts.openStream(destination);
      } catch (err) {
        this.#opts.logError(dialErrorMessage("udp", desc, err));
        flow.closed = true;
        if (this.#flows.get(key) === flow) this.#flows.delete(key);
        this.#all.delete(flow);
        return;
      }
      if (flow.closed) {
        this.#all.delete(flow);
        try {
          stream.reset("UDP association closed");
        } catch { /* ignore */ }
        return;
      }
      flow.stream = stream;
      for (const p of flow.pending.splice(0)) this.#write(flow, p);
      await this.#readReplies(flow, stream);
    })();
    this.#track(flow.done);
    return flow;
  }

  async #readReplies(flow: Flow, stream: RelayStream): Promise<void> {
    const decoder = new UdpFrameDecoder();
    try {
      for (;;) {
        const chunk = await stream.read();
        if (chunk === null) break;
        for (const dg of decoder.push(chunk)) {
          flow.lastActive = Date.now();
          if (this.#closed) return;
          try {
            await this.#socket.send(encodeUdpPacket(flow.rawAddress, dg), flow.client);
          } catch (err) {
            if (this.#closed) return;
            if (this.#opts.verbose >= 2) this.#opts.log(`UDP send failed: ${errorText(err)}`);
          }
        }
      }
    } catch (err) {
      if (!flow.closed && !this.#closed) {
        this.#opts.logError(
          `UDP flow ${this.#opts.describe(flow.destination)}: ${errorText(err)}`,
        );
      }
    }
    this.#closeFlow(flow, false);
    this.#all.delete(flow);
  }

  #closeFlow(flow: Flow, reset: boolean): void {
    if (this.#flows.get(flow.key) === flow) this.#flows.delete(flow.key);
    if (flow.closed) return;
    flow.closed = true;
    const stream = flow.stream;
    if (!stream) return;
    if (reset) {
      try {
        stream.reset("UDP flow closed");
      } catch { /* ignore */ }
    } else {
      this.#track(
        flow.writeChain.then(() => stream.closeWrite()).catch(() => {}),
      );
    }
  }

  #expire(): void {
    const now = Date.now();
    for (const flow of [...this.#all]) {
      if (flow.closed) continue;
      if (flow.expiredAt > 0) {
        // Half-closed for idleness but the stream has not ended: abort it.
        if (now - flow.expiredAt >= EXPIRE_GRACE_MS) this.#closeFlow(flow, true);
        continue;
      }
      if (now - flow.lastActive < this.#opts.idleMs) continue;
      if (this.#opts.verbose >= 2) {
        this.#opts.log(`UDP flow ${this.#opts.describe(flow.destination)} idle, closing`);
      }
      if (this.#flows.get(flow.key) === flow) this.#flows.delete(flow.key);
      flow.expiredAt = now;
      const stream = flow.stream;
      if (stream) {
        // Half-close: the agent ends the stream, which ends #readReplies.
        this.#track(flow.writeChain.then(() => stream.closeWrite()).catch(() => {}));
      } else {
        flow.closed = true;
      }
    }
  }
}

/** Strips the IPv4-mapped IPv6 prefix so `::ffff:127.0.0.1` equals `127.0.0.1`. */
export function normalizeIp(ip: string): string {
  const lower = ip.toLowerCase();
  return lower.startsWith("::ffff:") && lower.includes(".") ? lower.slice(7) : lower;
}
