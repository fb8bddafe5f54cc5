/**
 * A small DNS message codec (RFC 1035 wire format) for the harness's DNS servers: the cluster
 * DNS and the test-zone servers played for UDP container ports. Decoding follows compression
 * pointers; encoding writes names uncompressed (always valid, just longer).
 *
 * @module
 */

/** Record types this harness knows by name. Others are carried as raw RDATA. */
export const RecordType = {
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  PTR: 12,
  TXT: 16,
  AAAA: 28,
  SRV: 33,
  OPT: 41,
  ANY: 255,
} as const;

/** Response codes used here. */
export const Rcode = {
  NoError: 0,
  FormErr: 1,
  ServFail: 2,
  NXDomain: 3,
  NotImp: 4,
  Refused: 5,
} as const;

/** CLASS IN. */
export const CLASS_IN = 1;

/** One question. Names are lowercase-insensitive text without the trailing dot ("" = root). */
export interface DnsQuestion {
  name: string;
  type: number;
  class: number;
}

/** Typed RDATA for the record types the harness answers; anything else is `raw`. */
export type RData =
  | { kind: "a"; ip: string }
  | { kind: "aaaa"; ip: string }
  | { kind: "name"; name: string } // CNAME, NS, PTR
  | { kind: "txt"; strings: string[] }
  | { kind: "srv"; priority: number; weight: number; port: number; target: string }
  | {
    kind: "soa";
    mname: string;
    rname: string;
    serial: number;
    refresh: number;
    retry: number;
    expire: number;
    minimum: number;
  }
  | { kind: "raw"; bytes: Uint8Array };

/** One resource record. For OPT, `class` is the UDP payload size and `ttl` the extended flags. */
export interface DnsRecord {
  name: string;
  type: number;
  class: number;
  ttl: number;
  data: RData;
}

/** A whole message. */
export interface DnsMessage {
  id: number;
  /** true = response. */
  qr: boolean;
  opcode: number;
  aa: boolean;
  tc: boolean;
  rd: boolean;
  ra: boolean;
  rcode: number;
  questions: DnsQuestion[];
  answers: DnsRecord[];
  authorities: DnsRecord[];
  additionals: DnsRecord[];
}

/** A query (recursion desired) with one question: `name`, of `type`, class IN. */
export function queryMessage(id: number, name: string, type: number): DnsMessage {
  return {
    id,
    qr: false,
    opcode: 0,
    aa: false,
    tc: false,
    rd: true,
    ra: false,
    rcode: 0,
    questions: [{ name, type, class: CLASS_IN }],
    answers: [],
    authorities: [],
    additionals: [],
  };
}

/** Thrown by {@link decodeMessage} for malformed input. */
export class DnsFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DnsFormatError";
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Normalise a name: lowercase, no trailing dot. */
export function normalizeName(name: string): string {
  return name.replace(/\.$/, "").toLowerCase();
}

function ipv4Bytes(ip: string): Uint8Array {
  const parts = ip.split(".");
  if (parts.length !== 4) throw new TypeError(`bad IPv4 address ${ip}`);
  return Uint8Array.from(parts.map((p) => {
    const n = Number(p);
    if (!/^\d{1,3}$/.test(p) || n > 255) throw new TypeError(`bad IPv4 address ${ip}`);
    return n;
  }));
}

function ipv6Bytes(ip: string): Uint8Array {
  const halves = ip.split("::");
  if (halves.length > 2) throw new TypeError(`bad IPv6 address ${ip}`);
  const parse = (s: string) => (s === "" ? [] : s.split(":"));
  const head = parse(halves[0]);
  const tail = halves.length === 2 ? parse(halves[1]) : [];
  const fill = 8 - head.length - tail.length;
  if (fill < 0 || (halves.length === 1 && fill !== 0)) throw new TypeError(`bad IPv6 ${ip}`);
  const groups = [...head, ...Array(fill).fill("0"), ...tail];
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) throw new TypeError(`bad IPv6 address ${ip}`);
    const v = parseInt(g, 16);
    out[i * 2] = v >> 8;
    out[i * 2 + 1] = v & 0xff;
  });
  return out;
}

function ipv6Text(b: Uint8Array): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((b[i] << 8) | b[i + 1]);
  // Longest run of zero groups (length >= 2) becomes "::".
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) [best, bestLen] = [i, j - i];
    i = j;
  }
  const hex = (gs: number[]) => gs.map((g) => g.toString(16)).join(":");
  if (best < 0) return hex(groups);
  return `${hex(groups.slice(0, best))}::${hex(groups.slice(best + bestLen))}`;
}

/** Growable byte writer. */
class Writer {
  #buf = new Uint8Array(512);
  #len = 0;
  #ensure(n: number) {
    if (this.#len + n <= this.#buf.length) return;
    const next = new Uint8Array(Math.max(this.#buf.length * 2, this.#len + n));
    next.set(this.#buf.subarray(0, this.#len));
    this.#buf = next;
  }
  get length(): number {
    return this.#len;
  }
  u8(v: number) {
    this.#ensure(1);
    this.#buf[this.#len++] = v & 0xff;
  }
  u16(v: number) {
    this.u8(v >> 8);
    this.u8(v);
  }
  u32(v: number) {
    this.u16(Math.floor(v / 65536) & 0xffff);
    this.u16(v & 0xffff);
  }
  bytes(b: Uint8Array) {
    this.#ensure(b.length);
    this.#buf.set(b, this.#len);
    this.#len += b.length;
  }
  setU16(at: number, v: number) {
    this.#buf[at] = (v >> 8) & 0xff;
    this.#buf[at + 1] = v & 0xff;
  }
  name(name: string) {
    const n = name.replace(/\.$/, "");
    if (n !== "") {
      for (const label of n.split(".")) {
        const b = encoder.encode(label);
        if (b.length === 0 || b.length > 63) throw new TypeError(`bad DNS name ${name}`);
        this.u8(b.length);
        this.bytes(b);
      }
    }
    this.u8(0);
  }
  result(): Uint8Array {
    return this.#buf.slice(0, this.#len);
  }
}

function writeRecord(w: Writer, r: DnsRecord) {
  w.name(r.name);
  w.u16(r.type);
  w.u16(r.class);
  w.u32(r.ttl >>> 0);
  const lenAt = w.length;
  w.u16(0);
  const start = w.length;
  const d = r.data;
  switch (d.kind) {
    case "a":
      w.bytes(ipv4Bytes(d.ip));
      break;
    case "aaaa":
      w.bytes(ipv6Bytes(d.ip));
      break;
    case "name":
      w.name(d.name);
      break;
    case "txt":
      for (const s of d.strings) {
        const b = encoder.encode(s);
        if (b.length > 255) throw new TypeError("TXT string longer than 255 bytes");
        w.u8(b.length);
        w.bytes(b);
      }
      break;
    case "srv":
      w.u16(d.priority);
      w.u16(d.weight);
      w.u16(d.port);
      w.name(d.target);
      break;
    case "soa":
      w.name(d.mname);
      w.name(d.rname);
      w.u32(d.serial);
      w.u32(d.refresh);
      w.u32(d.retry);
      w.u32(d.expire);
      w.u32(d.minimum);
      break;
    case "raw":
      w.bytes(d.bytes);
      break;
  }
  w.setU16(lenAt, w.length - start);
}

/** Encode a message (throws TypeError for invalid names/addresses from our own code). */
export function encodeMessage(m: DnsMessage): Uint8Array {
  const w = new Writer();
  w.u16(m.id);
  w.u16(
    (m.qr ? 0x8000 : 0) | ((m.opcode & 0xf) << 11) | (m.aa ? 0x400 : 0) | (m.tc ? 0x200 : 0) |
      (m.rd ? 0x100 : 0) | (m.ra ? 0x80 : 0) | (m.rcode & 0xf),
  );
  w.u16(m.questions.length);
  w.u16(m.answers.length);
  w.u16(m.authorities.length);
  w.u16(m.additionals.length);
  for (const q of m.questions) {
    w.name(q.name);
    w.u16(q.type);
    w.u16(q.class);
  }
  for (const r of [...m.answers, ...m.authorities, ...m.additionals]) writeRecord(w, r);
  return w.result();
}

/** Byte reader over a whole message (names may point backwards into it). */
class Reader {
  pos = 0;
  constructor(readonly buf: Uint8Array) {}
  need(n: number) {
    if (this.pos + n > this.buf.length) throw new DnsFormatError("message truncated");
  }
  u8(): number {
    this.need(1);
    return this.buf[this.pos++];
  }
  u16(): number {
    return (this.u8() << 8) | this.u8();
  }
  u32(): number {
    return this.u16() * 65536 + this.u16();
  }
  bytes(n: number): Uint8Array {
    this.need(n);
    const b = this.buf.slice(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  name(): string {
    const labels: string[] = [];
    let pos = this.pos;
    let jumped = false;
    let jumps = 0;
    let total = 0;
    for (;;) {
      if (pos >= this.buf.length) throw new DnsFormatError("name truncated");
      const len = this.buf[pos];
      if ((len & 0xc0) === 0xc0) {
        if (pos + 1 >= this.buf.length) throw new DnsFormatError("pointer truncated");
        const target = ((len & 0x3f) << 8) | this.buf[pos + 1];
        if (!jumped) this.pos = pos + 2;
        jumped = true;
        if (++jumps > 64 || target >= this.buf.length) throw new DnsFormatError("bad pointer");
        pos = target;
        continue;
      }
      if ((len & 0xc0) !== 0) throw new DnsFormatError("bad label type");
      if (len === 0) {
        if (!jumped) this.pos = pos + 1;
        break;
      }
      if (pos + 1 + len > this.buf.length) throw new DnsFormatError("label truncated");
      total += len + 1;
      if (total > 255) throw new DnsFormatError("name too long");
      labels.push(decoder.decode(this.buf.subarray(pos + 1, pos + 1 + len)));
      pos += 1 + len;
    }
    return labels.join(".");
  }
}

function readRecord(r: Reader): DnsRecord {
  const name = r.name();
  const type = r.u16();
  const cls = r.u16();
  const ttl = r.u32();
  const len = r.u16();
  r.need(len);
  const end = r.pos + len;
  let data: RData;
  switch (type) {
    case RecordType.A:
      if (len !== 4) throw new DnsFormatError("A record length");
      data = { kind: "a", ip: Array.from(r.bytes(4)).join(".") };
      break;
    case RecordType.AAAA:
      if (len !== 16) throw new DnsFormatError("AAAA record length");
      data = { kind: "aaaa", ip: ipv6Text(r.bytes(16)) };
      break;
    case RecordType.CNAME:
    case RecordType.NS:
    case RecordType.PTR:
      data = { kind: "name", name: r.name() };
      break;
    case RecordType.TXT: {
      const strings: string[] = [];
      while (r.pos < end) strings.push(decoder.decode(r.bytes(r.u8())));
      data = { kind: "txt", strings };
      break;
    }
    case RecordType.SRV:
      data = {
        kind: "srv",
        priority: r.u16(),
        weight: r.u16(),
        port: r.u16(),
        target: r.name(),
      };
      break;
    case RecordType.SOA:
      data = {
        kind: "soa",
        mname: r.name(),
        rname: r.name(),
        serial: r.u32(),
        refresh: r.u32(),
        retry: r.u32(),
        expire: r.u32(),
        minimum: r.u32(),
      };
      break;
    default:
      data = { kind: "raw", bytes: r.bytes(len) };
  }
  if (r.pos !== end) throw new DnsFormatError(`record data length mismatch (type ${type})`);
  return { name, type, class: cls, ttl, data };
}

/** Decode a message; throws {@link DnsFormatError} if malformed. */
export function decodeMessage(buf: Uint8Array): DnsMessage {
  const r = new Reader(buf);
  const id = r.u16();
  const flags = r.u16();
  const qd = r.u16(), an = r.u16(), ns = r.u16(), ar = r.u16();
  const questions: DnsQuestion[] = [];
  for (let i = 0; i < qd; i++) questions.push({ name: r.name(), type: r.u16(), class: r.u16() });
  const section = (n: number) => Array.from({ length: n }, () => readRecord(r));
  const answers = section(an);
  const authorities = section(ns);
  const additionals = section(ar);
  return {
    id,
    qr: (flags & 0x8000) !== 0,
    opcode: (flags >> 11) & 0xf,
    aa: (flags & 0x400) !== 0,
    tc: (flags & 0x200) !== 0,
    rd: (flags & 0x100) !== 0,
    ra: (flags & 0x80) !== 0,
    rcode: flags & 0xf,
    questions,
    answers,
    authorities,
    additionals,
  };
}

/** The id of a message if at least 2 bytes are present (to answer FORMERR), else null. */
export function peekId(buf: Uint8Array): number | null {
  return buf.length >= 2 ? (buf[0] << 8) | buf[1] : null;
}
