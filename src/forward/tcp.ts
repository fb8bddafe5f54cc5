/**
 * Forwarded TCP ports: each accepted local connection is relayed through its own stream.
 *
 * @module
 */

import { StreamResetError } from "../mux/mod.ts";
import { hostPort } from "../protocol/addr.ts";
import { type BoundSocket, boundSocket, type ForwardContext, type Listener } from "./listener.ts";
import { SMALL_READ_BUFFER } from "../mux/buffers.ts";
import { relay } from "./pipe.ts";

/** Binds a TCP socket (port 0 = random); `serve` then relays each connection through a stream. */
export function bindTcp(address: string, port: number): BoundSocket {
  const l = Deno.listen({ hostname: address, port, transport: "tcp" });
  return boundSocket(l, address, "tcp", (ctx, bound) => serveTcp(l, address, bound, ctx));
}

function serveTcp(
  listener: Deno.TcpListener,
  address: string,
  boundPort: number,
  ctx: ForwardContext,
): Listener {
  const conns = new Set<Deno.TcpConn>();
  let accepting = true;
  (async () => {
    try {
      for await (const conn of listener) {
        if (!accepting) {
          conn.close();
          continue;
        }
        conns.add(conn);
        handle(conn).finally(() => conns.delete(conn));
      }
    } catch {
      // listener closed
    }
  })();
  async function handle(conn: Deno.TcpConn): Promise<void> {
    conn.setNoDelay(true);
    // Read at once, while the stream opens: bytes the client sends right after connecting then
    // go out together with the open (one packet, one round trip).
    const buf = new Uint8Array(SMALL_READ_BUFFER);
    const first = { n: conn.read(buf), buf };
    first.n.catch(() => {}); // the relay awaits it; without a stream the connection is closed
    ctx.out(`Handling connection for ${boundPort}`);
    let stream;
    try {
      stream = await ctx.open();
    } catch (e) {
      ctx.err(`error: ${(e as Error).message}`);
      try {
        conn.close();
      } catch {
        // gone
      }
      return;
    }
    // The first bytes travel with the open; a refusal shows up here and ends the relay.
    stream.ready.catch((e) => {
      if (!(e instanceof StreamResetError && !e.byPeer)) ctx.err(`error: ${(e as Error).message}`);
    });
    const { up, down } = await relay(conn, stream, undefined, first);
    ctx.log(4, `connection for ${boundPort} closed (${up} bytes sent, ${down} received)`);
  }
  return {
    address,
    port: boundPort,
    protocol: "tcp",
    get active() {
      return conns.size;
    },
    stopAccepting() {
      if (!accepting) return;
      accepting = false;
      try {
        listener.close();
      } catch {
        // closed
      }
    },
    close() {
      this.stopAccepting();
      for (const c of conns) {
        try {
          c.close();
        } catch {
          // closed
        }
      }
    },
  };
}

/** The startup line of a forwarded port: `Forwarding from 127.0.0.1:8080 -> 80`. */
export function forwardingLine(l: BoundSocket | Listener, remote: string): string {
  return `Forwarding from ${hostPort(l.address, l.port)} -> ${remote}${
    l.protocol === "udp" ? " (udp)" : ""
  }`;
}
