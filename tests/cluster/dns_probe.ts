/**
 * A one-question DNS client (A records, over UDP or TCP) for the harness: the cluster is declared
 * ready only once the cluster DNS Service answers.
 *
 * @module
 */

import {
  decodeMessage,
  type DnsMessage,
  encodeMessage,
  queryMessage,
  RecordType,
} from "./runtime/dns_wire.ts";

/**
 * The A records for `name` from server:port, or null on no answer / an error within `timeoutMs`.
 * For UDP, `socket` makes the client socket (default: 127.0.0.1, an ephemeral port).
 */
export async function lookupA(
  server: string,
  port: number,
  name: string,
  transport: "udp" | "tcp",
  timeoutMs = 1000,
  socket: () => Deno.DatagramConn = () =>
    Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" }),
): Promise<string[] | null> {
  const id = Math.floor(Math.random() * 65536);
  const query = encodeMessage(queryMessage(id, name, RecordType.A));
  let timer: ReturnType<typeof setTimeout> | undefined;
  let closer: (() => void) | undefined;
  const timeout = new Promise<null>((r) =>
    timer = setTimeout(() => {
      closer?.();
      r(null);
    }, timeoutMs)
  );
  const ask = async (): Promise<DnsMessage | null> => {
    if (transport === "udp") {
      const sock = socket();
      closer = () => sock.close();
      try {
        await sock.send(query, { transport: "udp", hostname: server, port });
        for (;;) {
          const [data] = await sock.receive();
          const m = decodeMessage(data);
          if (m.id === id) return m;
        }
      } finally {
        try {
          sock.close();
        } catch {
          // closed by the timeout
        }
      }
    }
    const conn = await Deno.connect({ hostname: server, port });
    closer = () => conn.close();
    try {
      const framed = new Uint8Array(query.length + 2);
      framed[0] = query.length >> 8;
      framed[1] = query.length & 255;
      framed.set(query, 2);
      await conn.write(framed);
      let buf = new Uint8Array(0);
      const chunk = new Uint8Array(4096);
      for (;;) {
        if (buf.length >= 2 && buf.length >= 2 + ((buf[0] << 8) | buf[1])) {
          return decodeMessage(buf.subarray(2, 2 + ((buf[0] << 8) | buf[1])));
        }
        const n = await conn.read(chunk);
        if (n === null) return null;
        const next = new Uint8Array(buf.length + n);
        next.set(buf);
        next.set(chunk.subarray(0, n), buf.length);
        buf = next;
      }
    } finally {
      try {
        conn.close();
      } catch {
        // closed by the timeout
      }
    }
  };
  try {
    const m = await Promise.race([ask().catch(() => null), timeout]);
    if (!m) return null;
    return m.answers.flatMap((r) => r.data.kind === "a" ? [r.data.ip] : []);
  } finally {
    clearTimeout(timer);
  }
}
