/** The benchmark's measurements, each against an echo server (TCP) or a DNS server (UDP). */
import { createHash } from "node:crypto";

const CHUNK = 256 * 1024;

/** Deterministic pseudo-random bytes (xorshift), so both ends can hash what they saw. */
function pattern(size: number, seed: number): Uint8Array {
  const out = new Uint8Array(size);
  let x = seed | 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 255;
  }
  return out;
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await conn.write(data.subarray(off));
}

/** Echoes `bytes` through host:port, checks SHA-256 of sent vs received, returns MiB/s. */
export async function throughput(hostname: string, port: number, bytes: number): Promise<number> {
  const conn = await Deno.connect({ hostname, port });
  conn.setNoDelay(true);
  const block = pattern(CHUNK, 7);
  const sent = createHash("sha256");
  const recv = createHash("sha256");
  const t0 = performance.now();
  const writer = (async () => {
    for (let off = 0; off < bytes; off += CHUNK) {
      const piece = block.subarray(0, Math.min(CHUNK, bytes - off));
      sent.update(piece);
      await writeAll(conn, piece);
    }
    await conn.closeWrite();
  })();
  let got = 0;
  const buf = new Uint8Array(CHUNK);
  while (got < bytes) {
    const n = await conn.read(buf);
    if (n === null) break;
    recv.update(buf.subarray(0, n));
    got += n;
  }
  await writer;
  const secs = (performance.now() - t0) / 1000;
  conn.close();
  if (got !== bytes || sent.digest("hex") !== recv.digest("hex")) {
    throw new Error(`echo mismatch: sent ${bytes} bytes, got ${got}, or SHA-256 differs`);
  }
  return bytes / (1 << 20) / secs;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** `count` sequential connections, each connect + 1-byte echo; p50/p99 in ms. */
export async function latency(
  hostname: string,
  port: number,
  count: number,
): Promise<{ p50: number; p99: number }> {
  const times: number[] = [];
  const one = new Uint8Array([42]);
  const buf = new Uint8Array(1);
  const deadline = Date.now() + 120_000;
  for (let i = 0; i < count && Date.now() < deadline; i++) {
    const t0 = performance.now();
    const conn = await Deno.connect({ hostname, port });
    conn.setNoDelay(true);
    await conn.write(one);
    const n = await conn.read(buf);
    times.push(performance.now() - t0);
    conn.close();
    if (n !== 1 || buf[0] !== 42) throw new Error("1-byte echo failed");
  }
  times.sort((a, b) => a - b);
  return { p50: percentile(times, 50), p99: percentile(times, 99) };
}

/** `count` concurrent connections each echoing `each` bytes; wall time and failures. */
export async function manyConnections(
  hostname: string,
  port: number,
  count: number,
  each: number,
): Promise<{ wallS: number; errors: number }> {
  const data = pattern(each, 11);
  const t0 = performance.now();
  let errors = 0;
  await Promise.all(Array.from({ length: count }, async () => {
    let conn: Deno.Conn | undefined;
    try {
      conn = await Deno.connect({ hostname, port });
      const c = conn;
      const w = writeAll(c, data).then(() => c.closeWrite());
      const buf = new Uint8Array(64 * 1024);
      let got = 0;
      let same = true;
      const timeout = setTimeout(() => c.close(), 60_000);
      try {
        while (got < each) {
          const n = await c.read(buf);
          if (n === null) break;
          for (let i = 0; i < n; i += 997) if (buf[i] !== data[got + i]) same = false;
          got += n;
        }
      } finally {
        clearTimeout(timeout);
      }
      await w;
      if (got !== each || !same) errors++;
    } catch {
      errors++;
    } finally {
      try {
        conn?.close();
      } catch {
        // closed
      }
    }
  }));
  return { wallS: (performance.now() - t0) / 1000, errors };
}

const DNS_NAME = [
  6,
  ...new TextEncoder().encode("whoami"),
  4,
  ...new TextEncoder().encode("test"),
  5,
  ...new TextEncoder().encode("relay"),
  0,
];
/** `whoami.test.relay. IN TXT`, id 0: the template every query copies. */
const DNS_QUERY = new Uint8Array([0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, ...DNS_NAME, 0, 16, 0, 1]);

function dnsQuery(id: number): Uint8Array {
  const q = DNS_QUERY.slice();
  q[0] = id >> 8;
  q[1] = id & 255;
  return q;
}

/**
 * Sends `count` DNS queries with up to 32 in flight (1 s timeout each, 60 s overall bound);
 * returns answered queries per second and the share unanswered.
 */
export async function dnsQueryLoop(
  hostname: string,
  port: number,
  count: number,
): Promise<{ qps: number; lossPct: number }> {
  const sock = Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
  const pending = new Map<number, number>();
  let answered = 0;
  let sent = 0;
  let lost = 0;
  const t0 = performance.now();
  const deadline = Date.now() + 60_000;
  const receiver = (async () => {
    // A reused buffer: receive() without one allocates and zeroes 64 KiB per datagram (~30 µs),
    // CPU that the measured path, not the load generator, should get on a small machine.
    const into = new Uint8Array(65536);
    try {
      while (true) {
        const [buf] = await sock.receive(into);
        const id = (buf[0] << 8) | buf[1];
        if (pending.delete(id)) answered++;
      }
    } catch {
      // closed
    }
  })();
  while ((sent < count || pending.size > 0) && Date.now() < deadline) {
    const now = Date.now();
    for (const [id, at] of pending) {
      if (now - at > 1000) {
        pending.delete(id);
        lost++;
      }
    }
    while (pending.size < 32 && sent < count) {
      const id = sent & 0xffff;
      pending.set(id, Date.now());
      sent++;
      await sock.send(dnsQuery(id), { transport: "udp", hostname, port });
    }
    await new Promise((r) => setTimeout(r, 1));
  }
  lost += pending.size;
  const secs = (performance.now() - t0) / 1000;
  sock.close();
  await receiver;
  return { qps: answered / secs, lossPct: (100 * lost) / Math.max(1, sent) };
}
