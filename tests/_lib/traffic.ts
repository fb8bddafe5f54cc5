/**
 * Request-level traffic for rollout checks (loopback only): every HTTP request on a NEW TCP
 * connection (`Connection: close`), every DNS query on a NEW UDP socket (a new flow), several
 * concurrent workers, bounded in count and time, and a per-request tally.
 */

import {
  decodeMessage,
  encodeMessage,
  queryMessage,
  RecordType,
} from "../cluster/runtime/dns_wire.ts";

/** The outcome of one request: the pod that answered, or why it failed. */
export type Outcome = { ok: true; pod: string } | { ok: false; error: string };

/** What the harness's pod servers answer with. */
const enc = new TextEncoder();
const dec = new TextDecoder();

function errName(e: unknown): string {
  return e instanceof Error ? (e.name === "Error" ? e.message : e.name) : String(e);
}

/**
 * One `GET /` on a new TCP connection with `Connection: close`, read to EOF. The harness's pod
 * HTTP server answers with the pod's name.
 */
export async function httpOnce(hostname: string, port: number, timeoutMs = 5000): Promise<Outcome> {
  let conn: Deno.TcpConn | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<Outcome>((r) =>
    timer = setTimeout(() => {
      try {
        conn?.close();
      } catch {
        // closed
      }
      r({ ok: false, error: "timeout" });
    }, timeoutMs)
  );
  const attempt = (async (): Promise<Outcome> => {
    conn = await Deno.connect({ hostname, port });
    await conn.write(enc.encode("GET / HTTP/1.1\r\nHost: relay-test\r\nConnection: close\r\n\r\n"));
    let text = "";
    const buf = new Uint8Array(4096);
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += dec.decode(buf.subarray(0, n));
    }
    const i = text.indexOf("\r\n\r\n");
    const status = text.slice(0, text.indexOf("\r\n"));
    if (i < 0 || !/^HTTP\/1\.1 200 /.test(status)) {
      return { ok: false, error: text ? `bad response: ${status}` : "EOF" };
    }
    const pod = text.slice(i + 4).trim();
    return pod ? { ok: true, pod } : { ok: false, error: "empty body" };
  })().catch((e) => ({ ok: false as const, error: errName(e) }));
  try {
    return await Promise.race([attempt, timeout]);
  } finally {
    clearTimeout(timer);
    try {
      conn?.close();
    } catch {
      // closed
    }
  }
}

/**
 * One `GET /` on an open connection that stays open (keep-alive; the answer's length is its
 * `Content-Length`): the body trimmed (the pod's name), or null if the connection ended (EOF or
 * reset) before a whole answer.
 */
export async function keepAliveGet(conn: Deno.Conn): Promise<string | null> {
  try {
    await conn.write(enc.encode("GET / HTTP/1.1\r\nHost: relay-test\r\n\r\n"));
    let text = "";
    const buf = new Uint8Array(4096);
    for (;;) {
      const i = text.indexOf("\r\n\r\n");
      if (i >= 0) {
        const len = Number(text.slice(0, i).match(/content-length:\s*(\d+)/i)?.[1]);
        if (text.length >= i + 4 + len) return text.slice(i + 4, i + 4 + len).trim();
      }
      const n = await conn.read(buf);
      if (n === null) return null; // EOF
      text += dec.decode(buf.subarray(0, n));
    }
  } catch {
    return null; // reset
  }
}

const udpSocket = () => Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
const usedPorts = new Set<number>();

/**
 * A UDP socket on a local port this process has not used before: a query from it is a new flow
 * for conntrack (and for the relay's flow table), not the continuation of an earlier flow from a
 * reused ephemeral port.
 */
export function freshSocket(): Deno.DatagramConn {
  for (let i = 0;; i++) {
    const sock = udpSocket();
    const port = (sock.addr as Deno.NetAddr).port;
    if (!usedPorts.has(port) || i >= 100) {
      usedPorts.add(port);
      return sock;
    }
    sock.close();
  }
}

/**
 * One `whoami.test.relay TXT` query on a new UDP socket, one attempt, no retry. The harness's
 * test-zone DNS server answers with the pod's name. With `freshPort` (default true) the socket's
 * port is one this process never used: the query is a new flow for certain.
 */
export async function udpWhoami(
  hostname: string,
  port: number,
  timeoutMs = 3000,
  freshPort = true,
): Promise<Outcome> {
  const sock = freshPort ? freshSocket() : udpSocket();
  const id = Math.floor(Math.random() * 65536);
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await sock.send(
      encodeMessage(queryMessage(id, "whoami.test.relay", RecordType.TXT)),
      { transport: "udp", hostname, port },
    );
    const timeout = new Promise<Outcome>((r) =>
      timer = setTimeout(() => r({ ok: false, error: "timeout" }), timeoutMs)
    );
    const answer = (async (): Promise<Outcome> => {
      for (;;) {
        const [data] = await sock.receive();
        const m = decodeMessage(data);
        if (m.id !== id) continue;
        const txt = m.answers.find((a) => a.data.kind === "txt")?.data;
        return txt?.kind === "txt"
          ? { ok: true, pod: txt.strings[0] }
          : { ok: false, error: `rcode ${m.rcode}` };
      }
    })().catch((e) => ({ ok: false as const, error: errName(e) }));
    return await Promise.race([answer, timeout]);
  } catch (e) {
    return { ok: false, error: errName(e) };
  } finally {
    clearTimeout(timer);
    sock.close();
  }
}

/** Per-request counts of a load loop. */
export interface Tally {
  ok: number;
  failed: number;
  /** Answers per pod name. */
  pods: Map<string, number>;
  /** Failures per error text. */
  errors: Map<string, number>;
  /** The first 20 failures: when (ms since the epoch) the request started, and the error. */
  failures: { at: number; error: string }[];
  /** The slowest successful request (ms). */
  slowestMs: number;
}

/** A running load loop. */
export interface LoadLoop {
  readonly name: string;
  readonly tally: Tally;
  /** Stop (workers finish their current request) and return the tally. */
  stop(): Promise<Tally>;
}

/** Options of {@link startLoad}. */
export interface LoadOptions {
  /** Concurrent workers (default 3). */
  workers?: number;
  /** Pause between two requests of a worker (default 20 ms). */
  pauseMs?: number;
  /** Bound: requests per worker (default 3000). */
  maxPerWorker?: number;
  /** Bound: the loop stops by itself after this long (default 120 s). */
  maxMs?: number;
}

/** Start `workers` loops calling `once` until stop() (or the bounds). */
export function startLoad(
  name: string,
  once: () => Promise<Outcome>,
  opts: LoadOptions = {},
): LoadLoop {
  const tally: Tally = {
    ok: 0,
    failed: 0,
    pods: new Map(),
    errors: new Map(),
    failures: [],
    slowestMs: 0,
  };
  let stopped = false;
  const deadline = Date.now() + (opts.maxMs ?? 120_000);
  const worker = async () => {
    for (let i = 0; i < (opts.maxPerWorker ?? 3000) && !stopped && Date.now() < deadline; i++) {
      const at = Date.now();
      const r = await once();
      if (r.ok) {
        tally.ok++;
        tally.slowestMs = Math.max(tally.slowestMs, Date.now() - at);
        tally.pods.set(r.pod, (tally.pods.get(r.pod) ?? 0) + 1);
      } else {
        tally.failed++;
        tally.errors.set(r.error, (tally.errors.get(r.error) ?? 0) + 1);
        if (tally.failures.length < 20) tally.failures.push({ at, error: r.error });
      }
      await new Promise((r) => setTimeout(r, opts.pauseMs ?? 20));
    }
  };
  const running = Promise.all(Array.from({ length: opts.workers ?? 3 }, worker));
  return {
    name,
    tally,
    async stop() {
      stopped = true;
      await running;
      return tally;
    },
  };
}

/** One line: `name: N ok, M failed (pods a×3 b×2; errors …)`. */
export function formatTally(name: string, t: Tally): string {
  const pods = [...t.pods].map(([p, n]) => `${p}×${n}`).join(" ");
  const errors = [...t.errors].map(([e, n]) => `${e}×${n}`).join(", ");
  return `${name}: ${t.ok} ok, ${t.failed} failed (slowest ok ${t.slowestMs} ms; ${pods}${
    errors ? `; errors: ${errors}` : ""
  })`;
}
