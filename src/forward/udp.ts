/**
 * Forwarded UDP ports: one relayed flow (a stream of length-prefixed datagrams) per local client
 * address:port.
 *
 * @module
 */

import { hostPort } from "../protocol/addr.ts";
import { encodeUdpFrame, UdpFrameDecoder } from "../protocol/udp.ts";
import {
  type BoundSocket,
  boundSocket,
  type ForwardContext,
  type Listener,
  type OpenedStream,
} from "./listener.ts";

/** Datagrams queued per flow while its stream is opening; more are dropped (as a network would). */
const MAX_PENDING = 256;

interface Flow {
  stream?: OpenedStream;
  pending: Uint8Array[];
  /** Datagrams handed to the stream and not yet written (bounds memory when the tunnel is slow). */
  inflight: number;
  lastActive: number;
  closed: boolean;
  /** Cancels the watch of the flow's pod (`OpenedStream.onTargetGone`). */
  unwatch?: () => void;
}

/**
 * Queues one datagram on the flow's stream. `Stream.write` keeps call order, so no chaining is
 * needed; past MAX_PENDING unwritten datagrams, new ones are dropped (as a congested network would).
 */
function send(flow: Flow, stream: OpenedStream, dg: Uint8Array): void {
  if (flow.inflight >= MAX_PENDING) return;
  flow.inflight++;
  stream.write(encodeUdpFrame(dg)).then(
    () => flow.inflight--,
    () => flow.inflight--,
  );
}

/**
 * Binds a UDP socket (port 0 = random); `serve` then keeps one relayed flow per local client
 * address:port. Flows idle for `idleMs` are closed, and so is a flow whose pod stops being a
 * serving pod (`OpenedStream.onTargetGone`): the client's next datagram opens a new flow.
 */
export function bindUdp(address: string, port: number, idleMs = 60_000): BoundSocket {
  const s = Deno.listenDatagram({ hostname: address, port, transport: "udp" });
  return boundSocket(s, address, "udp", (ctx, bound) => serveUdp(s, address, bound, ctx, idleMs));
}

function serveUdp(
  socket: Deno.DatagramConn,
  address: string,
  boundPort: number,
  ctx: ForwardContext,
  idleMs: number,
): Listener {
  const flows = new Map<string, Flow>();
  let accepting = true;
  let closed = false;

  const endFlow = (key: string, flow: Flow, why: string) => {
    if (flow.closed) return;
    flow.closed = true;
    flows.delete(key);
    flow.unwatch?.();
    flow.stream?.reset(why);
  };

  const sweep = setInterval(() => {
    const now = Date.now();
    for (const [key, flow] of flows) {
      if (now - flow.lastActive > idleMs) {
        ctx.log(4, `udp flow ${key} idle, closing`);
        endFlow(key, flow, "idle");
      }
    }
  }, Math.min(5000, Math.max(100, idleMs / 2)));

  async function startFlow(key: string, flow: Flow, client: Deno.NetAddr): Promise<void> {
    ctx.out(`Handling connection for ${boundPort}`);
    try {
      const stream = await ctx.open();
      await stream.ready;
      flow.stream = stream;
    } catch (e) {
      ctx.err(`error: ${(e as Error).message}`);
      if (flows.get(key) === flow) flows.delete(key);
      flow.closed = true;
      return;
    }
    if (flow.closed) {
      flow.stream.reset("closed");
      return;
    }
    // The pod this flow reached went away: end the flow, so the client's next datagram opens a
    // new one to a current ready pod (a kept client socket is not pinned to a deleted pod).
    flow.unwatch = flow.stream.onTargetGone?.(() => {
      ctx.log(2, `udp flow ${key}: its pod is gone or not Ready, closing it`);
      endFlow(key, flow, "pod gone");
    });
    const queued = flow.pending;
    flow.pending = [];
    for (const dg of queued) send(flow, flow.stream, dg);
    const decoder = new UdpFrameDecoder();
    try {
      while (true) {
        const chunk = await flow.stream.read();
        if (chunk === null) break;
        flow.lastActive = Date.now();
        for (const dg of decoder.push(chunk)) await socket.send(dg, client);
      }
    } catch (e) {
      if (!flow.closed && !closed) ctx.log(2, `udp flow ${key} ended: ${(e as Error).message}`);
    }
    endFlow(key, flow, "done");
  }

  (async () => {
    // One reused receive buffer: `receive()` without one allocates (and zeroes) 64 KiB per
    // datagram. `send` copies the datagram synchronously (framing), `pending` keeps a copy.
    const buf = new Uint8Array(65536);
    try {
      while (!closed) {
        const [data, remote] = await socket.receive(buf);
        const client = remote as Deno.NetAddr;
        const key = hostPort(client.hostname, client.port);
        let flow = flows.get(key);
        if (!flow) {
          if (!accepting || data.length > 65535) continue;
          flow = {
            pending: [],
            inflight: 0,
            lastActive: Date.now(),
            closed: false,
          };
          flows.set(key, flow);
          startFlow(key, flow, client);
        }
        flow.lastActive = Date.now();
        if (flow.stream) {
          send(flow, flow.stream, data);
        } else if (flow.pending.length < MAX_PENDING) {
          flow.pending.push(data.slice());
        }
      }
    } catch {
      // socket closed
    }
  })();

  return {
    address,
    port: boundPort,
    protocol: "udp",
    get active() {
      return flows.size;
    },
    stopAccepting() {
      accepting = false;
    },
    close() {
      if (closed) return;
      closed = true;
      accepting = false;
      clearInterval(sweep);
      for (const [key, flow] of flows) endFlow(key, flow, "closing");
      try {
        socket.close();
      } catch {
        // closed
      }
    },
  };
}
