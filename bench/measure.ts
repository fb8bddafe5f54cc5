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

/** Round-trip times of 1-byte echoes on one connection (ms). */
export interface EchoStats {
  samples: number;
  p50: number;
  p99: number;
  max: number;
}

function echoStats(times: number[]): EchoStats {
  const sorted = times.slice().sort((a, b) => a - b);
  return {
    samples: sorted.length,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    max: sorted[sorted.length - 1] ?? NaN,
  };
}

/** Interval between two 1-byte echo probes (they do not wait for each other's answers). */
const PROBE_INTERVAL_MS = 1;

/** One 1-byte echo on an established connection, waiting for its answer (warm-up). */
async function probe(conn: Deno.Conn, value: number, buf: Uint8Array): Promise<void> {
  await conn.write(new Uint8Array([value]));
  const n = await conn.read(buf);
  if (n !== 1 || buf[0] !== value) throw new Error("1-byte echo failed");
}

/**
 * Sends one byte every {@link PROBE_INTERVAL_MS} on an established echo connection while
 * `sending()` holds, without waiting for answers (open loop: a stalled path delays every probe
 * sent meanwhile, not just one), and matches the echoed bytes to their send times in order.
 * Returns the round-trip times (ms) of the probes for which `counted(sentAt)` holds. Probes still
 * unanswered `drainMs` after the last was sent are an error.
 */
async function probeLoop(
  conn: Deno.Conn,
  sending: () => boolean,
  counted: (sentAt: number) => boolean,
  drainMs = 30_000,
): Promise<number[]> {
  const sentAt: number[] = [];
  const times: number[] = [];
  let answered = 0;
  let mismatch = false;
  let allAnswered: (() => void) | undefined;
  const reader = (async () => {
    const buf = new Uint8Array(4096);
    try {
      while (true) {
        const n = await conn.read(buf);
        if (n === null) break;
        const now = performance.now();
        for (let i = 0; i < n; i++, answered++) {
          if (buf[i] !== (answered & 255) || answered >= sentAt.length) mismatch = true;
          if (counted(sentAt[answered])) times.push(now - sentAt[answered]);
        }
        if (answered === sentAt.length) allAnswered?.();
      }
    } catch {
      // closed below after the drain
    }
  })();
  while (sending()) {
    sentAt.push(performance.now());
    await conn.write(new Uint8Array([(sentAt.length - 1) & 255]));
    await new Promise((r) => setTimeout(r, PROBE_INTERVAL_MS));
  }
  if (answered < sentAt.length) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await new Promise<void>((resolve) => {
      allAnswered = resolve;
      timer = setTimeout(resolve, drainMs);
    });
    clearTimeout(timer);
  }
  try {
    conn.close();
  } catch {
    // closed already (a guard timer)
  }
  await reader;
  if (mismatch || answered !== sentAt.length) {
    throw new Error(`1-byte echoes: ${sentAt.length} sent, ${answered} answered, or out of order`);
  }
  return times;
}

/**
 * `count` 1-byte echoes, one every {@link PROBE_INTERVAL_MS}, on one established connection with
 * nothing else moving through the path: the reference for {@link echoUnderLoad}.
 */
export async function echoIdle(
  hostname: string,
  port: number,
  count: number,
  timeoutMs = 60_000,
): Promise<EchoStats> {
  const conn = await Deno.connect({ hostname, port });
  conn.setNoDelay(true);
  const buf = new Uint8Array(1);
  for (let i = 0; i < 20; i++) await probe(conn, i, buf); // warm-up, not counted
  const deadline = Date.now() + timeoutMs;
  let sent = 0;
  const times = await probeLoop(conn, () => sent++ < count && Date.now() < deadline, () => true);
  return echoStats(times);
}

/** {@link echoUnderLoad}'s result: the echo's round trips and what the bulk connection moved. */
export interface LoadedEchoStats extends EchoStats {
  /** Payload bytes the bulk connection sent (and got back) while the echoes ran. */
  bulkBytes: number;
  /** The bulk connection's echoed payload rate, MiB/s. */
  bulkMiBs: number;
}

/**
 * Latency under load: 1-byte echoes as in {@link echoIdle} on one established connection while a
 * second connection to the same host:port echoes bulk data as fast as it can (written and read
 * concurrently, so both directions of the path are full). The bulk connection moves at least
 * `bulkBytes` and goes on, one chunk at a time, until `minSamples` probes were sent under load or
 * `timeoutMs` has passed. Counted are the probes sent after the first bulk bytes came back and
 * before the last did.
 */
export async function echoUnderLoad(
  hostname: string,
  port: number,
  bulkBytes: number,
  minSamples: number,
  timeoutMs: number,
): Promise<LoadedEchoStats> {
  const echo = await Deno.connect({ hostname, port });
  echo.setNoDelay(true);
  const bulk = await Deno.connect({ hostname, port });
  bulk.setNoDelay(true);
  const block = pattern(CHUNK, 13);
  const deadline = Date.now() + timeoutMs;
  // A stalled path must not hang the run: close both connections well after the deadline.
  const guard = setTimeout(() => {
    echo.close();
    bulk.close();
  }, timeoutMs + 60_000);
  let written = 0;
  let writing = true;
  let received = 0;
  let mismatch = false;
  let t0 = Infinity; // first bulk bytes back
  let t1 = Infinity; // last bulk bytes back
  let sentLoaded = 0;
  try {
    const buf1 = new Uint8Array(1);
    for (let i = 0; i < 20; i++) await probe(echo, i, buf1); // warm-up, not counted
    const writer = (async () => {
      try {
        while (written < bulkBytes || (sentLoaded < minSamples && Date.now() < deadline)) {
          await writeAll(bulk, block);
          written += CHUNK;
        }
      } catch (e) {
        try {
          bulk.close(); // ends the reader
        } catch {
          // closed by the guard
        }
        throw e;
      } finally {
        writing = false;
      }
    })();
    const reader = (async () => {
      const buf = new Uint8Array(CHUNK);
      try {
        while (writing || received < written) {
          const n = await bulk.read(buf);
          if (n === null) break;
          // Spot-check the echoed bytes (the same block repeats every CHUNK bytes).
          for (let i = 0; i < n; i += 997) {
            if (buf[i] !== block[(received + i) % CHUNK]) mismatch = true;
          }
          received += n;
          if (t0 === Infinity) t0 = performance.now();
        }
      } finally {
        t1 = performance.now(); // also stops the probes
      }
    })();
    const times = probeLoop(
      echo,
      () => {
        if (t0 !== Infinity && t1 === Infinity) sentLoaded++;
        return t1 === Infinity;
      },
      (at) => at >= t0 && at < t1,
    );
    const [, , counted] = await Promise.all([writer, reader, times]);
    const stats = echoStats(counted);
    if (mismatch || received !== written) {
      throw new Error(`bulk echo mismatch: sent ${written} bytes, got ${received}`);
    }
    return { ...stats, bulkBytes: written, bulkMiBs: written / (1 << 20) / ((t1 - t0) / 1000) };
  } finally {
    clearTimeout(guard);
    try {
      bulk.close();
    } catch {
      // closed by the guard
    }
  }
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
      w.catch(() => {}); // awaited below; a failed read skips that (the connection counts as an error)
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
