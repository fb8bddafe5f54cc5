/**
 * A DNS server over UDP and TCP (RFC 1035 / RFC 7766 framing) that asks a {@link DnsAnswerer}
 * for each query. Used for the cluster DNS and for the test-zone servers played for pods.
 *
 * @module
 */

import {
  decodeMessage,
  DnsFormatError,
  type DnsMessage,
  type DnsRecord,
  encodeMessage,
  peekId,
  Rcode,
  RecordType,
} from "./dns_wire.ts";
import { safeClose, serveTcp, type TcpServer } from "./tcp_server.ts";

/** What an answerer returns for one question. */
export interface DnsAnswer {
  rcode: number;
  answers: DnsRecord[];
  authorities?: DnsRecord[];
  additionals?: DnsRecord[];
  /** Authoritative answer flag (default true). */
  aa?: boolean;
}

/** Answers one (decoded, single-question) query. Must not throw. */
export type DnsAnswerer = (query: DnsMessage) => DnsAnswer;

/** Options for {@link startDnsServer}. */
export interface DnsServerOptions {
  hostname: string;
  port: number;
  /** Serve UDP (default true). */
  udp?: boolean;
  /** Serve TCP (default true). */
  tcp?: boolean;
  answer: DnsAnswerer;
  log?: (line: string) => void;
}

/** A running DNS server. */
export interface DnsServer {
  /** Actual port (useful with port 0; UDP and TCP share it). */
  readonly port: number;
  /**
   * Stop like a graceful server: the UDP socket and the TCP listener are closed (resolves once
   * released); open TCP connections go on.
   */
  stopAccepting(): Promise<void>;
  /** Resolves once no TCP connection is open. */
  drained(): Promise<void>;
  close(): Promise<void>;
}

const UDP_DEFAULT_MAX = 512;
const OUR_UDP_PAYLOAD = 1232;

/** Build the response bytes for a raw query; null = drop (not even an id). */
export function handleQuery(
  bytes: Uint8Array,
  answer: DnsAnswerer,
  transport: "udp" | "tcp",
): Uint8Array | null {
  let query: DnsMessage;
  try {
    query = decodeMessage(bytes);
  } catch (e) {
    const id = peekId(bytes);
    if (id === null || !(e instanceof DnsFormatError)) return null;
    return encodeMessage(bareResponse(id, Rcode.FormErr));
  }
  if (query.qr) return null; // never answer responses
  const opt = query.additionals.find((r) => r.type === RecordType.OPT);
  let result: DnsAnswer;
  if (query.opcode !== 0) result = { rcode: Rcode.NotImp, answers: [] };
  else if (query.questions.length !== 1) result = { rcode: Rcode.FormErr, answers: [] };
  else result = answer(query);
  const response: DnsMessage = {
    id: query.id,
    qr: true,
    opcode: query.opcode,
    aa: result.aa ?? true,
    tc: false,
    rd: query.rd,
    ra: false,
    rcode: result.rcode,
    questions: query.questions,
    answers: result.answers,
    authorities: result.authorities ?? [],
    additionals: [
      ...(result.additionals ?? []),
      ...(opt
        ? [{
          name: "",
          type: RecordType.OPT,
          class: OUR_UDP_PAYLOAD,
          ttl: 0,
          data: { kind: "raw" as const, bytes: new Uint8Array(0) },
        }]
        : []),
    ],
  };
  let out = encodeMessage(response);
  if (transport === "udp") {
    const max = opt
      ? Math.max(UDP_DEFAULT_MAX, Math.min(opt.class, OUR_UDP_PAYLOAD))
      : UDP_DEFAULT_MAX;
    if (out.length > max) {
      out = encodeMessage({ ...response, tc: true, answers: [], authorities: [], additionals: [] });
    }
  }
  return out;
}

function bareResponse(id: number, rcode: number): DnsMessage {
  return {
    id,
    qr: true,
    opcode: 0,
    aa: false,
    tc: false,
    rd: false,
    ra: false,
    rcode,
    questions: [],
    answers: [],
    authorities: [],
    additionals: [],
  };
}

async function serveUdp(sock: Deno.DatagramConn, opts: DnsServerOptions): Promise<void> {
  for (;;) {
    let msg: [Uint8Array, Deno.Addr];
    try {
      msg = await sock.receive();
    } catch {
      return; // closed
    }
    const out = handleQuery(msg[0], opts.answer, "udp");
    if (out) await sock.send(out, msg[1]).catch(() => {});
  }
}

async function readExact(conn: Deno.Conn, n: number): Promise<Uint8Array | null> {
  const buf = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const r = await conn.read(buf.subarray(got));
    if (r === null) return null;
    got += r;
  }
  return buf;
}

async function serveTcpConn(conn: Deno.Conn, opts: DnsServerOptions): Promise<void> {
  try {
    for (;;) {
      const len = await readExact(conn, 2);
      if (!len) return;
      const body = await readExact(conn, (len[0] << 8) | len[1]);
      if (!body) return;
      const out = handleQuery(body, opts.answer, "tcp");
      if (!out) return;
      const framed = new Uint8Array(out.length + 2);
      framed[0] = out.length >> 8;
      framed[1] = out.length & 0xff;
      framed.set(out, 2);
      let off = 0;
      while (off < framed.length) off += await conn.write(framed.subarray(off));
    }
  } catch {
    // peer went away
  } finally {
    try {
      conn.close();
    } catch {
      // already closed
    }
  }
}

/** Start serving; resolves once the sockets are bound. */
export async function startDnsServer(opts: DnsServerOptions): Promise<DnsServer> {
  const wantUdp = opts.udp ?? true;
  const wantTcp = opts.tcp ?? true;
  let port = opts.port;
  let tcp: TcpServer | undefined;
  let sock: Deno.DatagramConn | undefined;
  try {
    if (wantTcp) {
      tcp = await serveTcp(opts.hostname, port, (conn) => serveTcpConn(conn, opts));
      port = tcp.port;
    }
    if (wantUdp) {
      sock = Deno.listenDatagram({ hostname: opts.hostname, port, transport: "udp" });
      port = (sock.addr as Deno.NetAddr).port;
    }
  } catch (e) {
    await tcp?.close();
    throw e;
  }
  const udpTask = sock ? serveUdp(sock, opts) : Promise.resolve();
  let stopping: Promise<void> | undefined;
  const stopAccepting = () => {
    stopping ??= (async () => {
      if (sock) safeClose(sock);
      await udpTask;
      await tcp?.stopAccepting();
    })();
    return stopping;
  };
  let closing: Promise<void> | undefined;
  return {
    port,
    stopAccepting,
    drained: () => tcp?.drained() ?? Promise.resolve(),
    close() {
      closing ??= (async () => {
        await stopAccepting();
        await tcp?.close();
      })();
      return closing;
    },
  };
}
