/**
 * The HTTP server played for a pod's TCP container port. Every response carries the header
 * `X-Pod-Name: <pod>`. Routes:
 * - `POST|PUT /echo`: the request body, streamed back (for checksum tests);
 * - `GET /bytes/<n>`: n bytes (n ≤ 1 GiB), byte i = i mod 251 (deterministic, for throughput);
 * - anything else: body `<pod name>\n`.
 *
 * The pod IP:port is a TCP front ({@link serveTcp}) relaying each connection to the HTTP server
 * on 127.0.0.1, so that the pod stops like a graceful server: `stopAccepting()` releases the
 * listener while open connections (keep-alive included) go on until they end or `close()`.
 * (`Deno.serve` alone cannot stop accepting without also closing idle keep-alive connections.)
 *
 * @module
 */

import { pipeConns, safeClose, serveTcp, type TcpServer } from "./tcp_server.ts";

/** A running pod HTTP server. */
export type PodHttpServer = TcpServer;

const MAX_BYTES = 1 << 30;
const PATTERN = (() => {
  // 251 is prime, so a 64 KiB chunk of the pattern can be sliced at any offset mod 251.
  const b = new Uint8Array(65536 + 251);
  for (let i = 0; i < b.length; i++) b[i] = i % 251;
  return b;
})();

/** The pattern bytes served by `/bytes/<n>` (exported for tests). */
export function patternBytes(n: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = i % 251;
  return out;
}

function bytesStream(n: number): ReadableStream<Uint8Array> {
  let sent = 0;
  return new ReadableStream<Uint8Array>({
    pull(ctrl) {
      if (sent >= n) {
        ctrl.close();
        return;
      }
      const len = Math.min(65536, n - sent);
      const off = sent % 251;
      ctrl.enqueue(PATTERN.slice(off, off + len));
      sent += len;
    },
  });
}

/** Start serving on hostname:port (port 0 = any). Resolves once listening. */
export async function startPodHttpServer(
  hostname: string,
  port: number,
  podName: string,
): Promise<PodHttpServer> {
  const inner = await startHttp("127.0.0.1", 0, podName);
  let front: TcpServer;
  try {
    front = await serveTcp(hostname, port, async (conn) => {
      let up: Deno.TcpConn;
      try {
        up = await Deno.connect({ hostname: "127.0.0.1", port: inner.port });
      } catch {
        safeClose(conn);
        return;
      }
      conn.setNoDelay(true);
      up.setNoDelay(true);
      await pipeConns(conn, up);
    });
  } catch (e) {
    await inner.close();
    throw e;
  }
  let closing: Promise<void> | undefined;
  return {
    port: front.port,
    stopAccepting: () => front.stopAccepting(),
    drained: () => front.drained(),
    close() {
      closing ??= (async () => {
        await front.close();
        await inner.close();
      })();
      return closing;
    },
  };
}

/** The HTTP server itself. */
function startHttp(
  hostname: string,
  port: number,
  podName: string,
): Promise<{ port: number; close(): Promise<void> }> {
  return new Promise((resolve, reject) => {
    let server: Deno.HttpServer<Deno.NetAddr> | undefined;
    try {
      server = Deno.serve({
        hostname,
        port,
        onListen(addr) {
          resolve({
            port: addr.port,
            close: async () => {
              // The front has closed every connection by now; do not wait long anyway.
              let timer: ReturnType<typeof setTimeout> | undefined;
              await Promise.race([
                server!.shutdown(),
                new Promise((r) => timer = setTimeout(r, 1000)),
              ]);
              clearTimeout(timer);
            },
          });
        },
        onError() {
          return new Response("internal error\n", { status: 500 });
        },
      }, (req) => {
        const headers = { "X-Pod-Name": podName, "Content-Type": "text/plain" };
        const url = new URL(req.url);
        if (url.pathname === "/echo" && (req.method === "POST" || req.method === "PUT")) {
          return new Response(req.body, {
            headers: { ...headers, "Content-Type": "application/octet-stream" },
          });
        }
        const m = url.pathname.match(/^\/bytes\/(\d+)$/);
        if (m && req.method === "GET") {
          const n = Number(m[1]);
          if (n > MAX_BYTES) return new Response("too large\n", { status: 400, headers });
          return new Response(bytesStream(n), {
            headers: {
              ...headers,
              "Content-Type": "application/octet-stream",
              "Content-Length": String(n),
            },
          });
        }
        return new Response(`${podName}\n`, { headers });
      });
    } catch (e) {
      reject(e);
    }
  });
}
