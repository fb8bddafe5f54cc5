/**
 * A tiny authoritative-for-everything DNS server for tests, on a loopback address,
 * port 53 (needs root). Answers A queries from a table, NODATA for other types of
 * known names, NXDOMAIN for unknown names, and never answers names in `silent`.
 */

/** Query types used by the tests. */
export const QueryType = { A: 1, TXT: 16 } as const;

/** A DNS query (recursion desired) for `name`, of type A unless told otherwise. */
export function dnsQuery(id: number, name: string, type: number = QueryType.A): Uint8Array {
  const labels = name.split(".").flatMap((l) => [l.length, ...new TextEncoder().encode(l)]);
  // ID, flags (RD), QDCOUNT 1, AN/NS/AR 0, QNAME, QTYPE, QCLASS IN.
  return new Uint8Array([
    id >> 8,
    id & 0xff,
    1,
    0,
    0,
    1,
    0,
    0,
    0,
    0,
    0,
    0,
    ...labels,
    0,
    type >> 8,
    type & 0xff,
    0,
    1,
  ]);
}

/** A running fake DNS server. */
export interface FakeDns {
  readonly address: string;
  /** Names queried so far (lowercase, no trailing dot). */
  readonly queries: string[];
  close(): Promise<void>;
}

function parseName(msg: Uint8Array, off: number): [string, number] | undefined {
  const labels: string[] = [];
  while (off < msg.length) {
    const len = msg[off];
    if (len === 0) return [labels.join(".").toLowerCase(), off + 1];
    if (len > 63 || off + 1 + len > msg.length) return undefined;
    labels.push(new TextDecoder().decode(msg.subarray(off + 1, off + 1 + len)));
    off += 1 + len;
  }
  return undefined;
}

/** Starts the server on `address`:53 with `records` (name → IPv4). */
export function startFakeDns(
  address: string,
  records: Record<string, string>,
  silent: string[] = [],
): FakeDns {
  const sock = Deno.listenDatagram({ hostname: address, port: 53, transport: "udp" });
  const queries: string[] = [];
  const loop = (async () => {
    const buf = new Uint8Array(512);
    try {
      while (true) {
        const [q, from] = await sock.receive(buf);
        if (q.length < 12) continue;
        const parsed = parseName(q, 12);
        if (!parsed || parsed[1] + 4 > q.length) continue;
        const [name, end] = parsed;
        queries.push(name);
        if (silent.includes(name)) continue;
        const qtype = (q[end] << 8) | q[end + 1];
        const question = q.subarray(12, end + 4);
        const ip = records[name];
        const answer = ip !== undefined && qtype === 1;
        const head = new Uint8Array(12);
        head.set(q.subarray(0, 2)); // id
        head[2] = 0x84 | (q[2] & 0x01); // QR, AA, RD copied
        head[3] = 0x80 | (ip === undefined ? 3 : 0); // RA, rcode
        head[5] = 1; // QDCOUNT
        head[7] = answer ? 1 : 0; // ANCOUNT
        const rr = answer
          ? new Uint8Array([
            0xc0,
            0x0c,
            0,
            1,
            0,
            1,
            0,
            0,
            0,
            30,
            0,
            4,
            ...ip.split(".").map(Number),
          ])
          : new Uint8Array(0);
        const resp = new Uint8Array(head.length + question.length + rr.length);
        resp.set(head);
        resp.set(question, 12);
        resp.set(rr, 12 + question.length);
        await sock.send(resp, from);
      }
    } catch {
      // closed
    }
  })();
  return {
    address,
    queries,
    async close() {
      try {
        sock.close();
      } catch {
        // closed
      }
      await loop;
    },
  };
}
