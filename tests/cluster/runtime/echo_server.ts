/**
 * Echo servers played for pod ports named `echo*`: TCP sends back every byte and half-closes
 * after the client's EOF; UDP sends every datagram back to its sender. Both stop like a graceful
 * server ({@link EchoServer.stopAccepting}): TCP keeps its open connections, UDP closes its socket.
 *
 * @module
 */

import { echoConn } from "../../_lib/echo.ts";
import { safeClose, serveTcp, type TcpServer } from "./tcp_server.ts";

/** A running echo server. */
export type EchoServer = TcpServer;

/** TCP echo on hostname:port (0 = any port). */
export function startTcpEcho(hostname: string, port: number): Promise<EchoServer> {
  return serveTcp(hostname, port, (conn) => {
    try {
      conn.setNoDelay(true);
    } catch {
      // not fatal
    }
    return echoConn(conn);
  });
}

/** UDP echo on hostname:port (0 = any port). */
export function startUdpEcho(hostname: string, port: number): Promise<EchoServer> {
  let sock: Deno.DatagramConn;
  try {
    sock = Deno.listenDatagram({ hostname, port, transport: "udp" });
  } catch (e) {
    return Promise.reject(e);
  }
  const serving = (async () => {
    try {
      for (;;) {
        const [data, addr] = await sock.receive();
        await sock.send(data, addr).catch(() => {});
      }
    } catch {
      // closed
    }
  })();
  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= (async () => {
      safeClose(sock);
      await serving;
    })();
    return closing;
  };
  return Promise.resolve({
    port: (sock.addr as Deno.NetAddr).port,
    // A UDP server has nothing established to finish: stopping is closing the socket.
    stopAccepting: close,
    drained: () => Promise.resolve(),
    close,
  });
}
