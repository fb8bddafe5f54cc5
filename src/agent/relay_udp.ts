/**
 * Relays one UDP flow: datagrams framed on the client Endpoint (see
 * src/protocol/udp.ts) are sent from a dedicated socket (one `Deno.listenDatagram`
 * per flow, unstable net API: `--unstable-net` or `"unstable": ["net"]`) to the
 * destination; datagrams from the destination are framed back. Datagrams from any
 * other source are dropped. The flow ends when the client half-closes, on error, or
 * after `idleMs` with no datagram either way.
 *
 * @module
 */

import { errorText } from "../errors.ts";
import { formatIpv6, parseIpv4, parseIpv6 } from "../protocol/addr.ts";
import { encodeUdpFrame, MAX_DATAGRAM, UdpFrameDecoder } from "../protocol/udp.ts";
import type { Endpoint } from "./endpoint.ts";

/** Outcome of a UDP flow. */
export interface UdpFlowResult {
  /** Datagrams client → destination. */
  sent: number;
  /** Datagrams destination → client. */
  received: number;
  /** Datagrams the socket refused to send (dropped). */
  dropped: number;
  /** Why it ended: "client closed", "idle", or an error. */
  reason: string;
}

/** Normalizes an IP text for comparison (IPv4-mapped IPv6 → IPv4; IPv6 canonical). */
function normalizeIp(ip: string): string {
  if (parseIpv4(ip)) return ip;
  const b = parseIpv6(ip.replace(/^\[|\]$/g, ""));
  if (!b) return ip;
  const t = formatIpv6(b);
  return t.startsWith("::ffff:") && parseIpv4(t.slice(7)) ? t.slice(7) : t;
}

/** Opens a UDP socket suitable for reaching `ip` (IPv4 or IPv6), on an ephemeral port. */
export function openFlowSocket(ip: string): Deno.DatagramConn {
  const v6 = !parseIpv4(ip);
  return Deno.listenDatagram({ transport: "udp", hostname: v6 ? "::" : "0.0.0.0", port: 0 });
}

/**
 * Relays a flow between `client` and `ip:port` over `socket` (which this function
 * closes). The client must already have been accepted.
 */
export async function relayUdp(
  client: Endpoint,
  socket: Deno.DatagramConn,
  ip: string,
  port: number,
  idleMs: number,
): Promise<UdpFlowResult> {
  const dest = normalizeIp(ip);
  const result: UdpFlowResult = { sent: 0, received: 0, dropped: 0, reason: "" };
  let ended = false;
  let last = Date.now();
  let timer: ReturnType<typeof setTimeout> | undefined;
  let finish!: () => void;
  const finished = new Promise<void>((r) => finish = r);

  const end = (reason: string, abort: boolean) => {
    if (ended) return;
    ended = true;
    result.reason = reason;
    clearTimeout(timer);
    try {
      socket.close();
    } catch {
      // already closed
    }
    if (abort) client.abort(reason);
    else {
      client.closeWrite().then(() => client.close(), () => client.abort(reason));
    }
    finish();
  };

  const arm = () => {
    if (idleMs <= 0 || ended) return;
    const wait = last + idleMs - Date.now();
    timer = setTimeout(() => {
      if (Date.now() - last >= idleMs) end("idle", true);
      else arm();
    }, Math.max(wait, 1));
  };
  arm();

  const up = async () => {
    const decoder = new UdpFrameDecoder();
    const addr: Deno.NetAddr = { transport: "udp", hostname: ip, port };
    try {
      while (!ended) {
        const chunk = await client.read();
        if (chunk === null) return end("client closed", false);
        for (const d of decoder.push(chunk)) {
          last = Date.now();
          try {
            await socket.send(d, addr);
            result.sent++;
          } catch (e) {
            if (ended) return;
            // One undeliverable datagram (too big for IPv4, no buffer space...) is dropped, as
            // a network would; the flow goes on.
            result.dropped++;
            void e;
          }
        }
      }
    } catch (e) {
      if (!ended) end(`client→destination: ${errorText(e)}`, true);
    }
  };

  const down = async () => {
    const buf = new Uint8Array(MAX_DATAGRAM);
    let peerText = ""; // the last source text that normalized to `dest` (skips re-parsing it)
    try {
      while (!ended) {
        const [d, from] = await socket.receive(buf);
        const f = from as Deno.NetAddr;
        if (f.port !== port) continue; // not our peer
        if (f.hostname !== peerText) {
          if (normalizeIp(f.hostname) !== dest) continue; // not our peer
          peerText = f.hostname;
        }
        last = Date.now();
        await client.write(encodeUdpFrame(d));
        result.received++;
      }
    } catch (e) {
      if (!ended) end(`destination→client: ${errorText(e)}`, true);
    }
  };

  up();
  down();
  await finished;
  return result;
}
