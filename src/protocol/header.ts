/**
 * The Header: sent by the client at the start of every relayed TCP connection
 * and UDP flow, naming the destination. Wire format (all integers big-endian):
 *
 * | field            | bytes    | meaning                                     |
 * |------------------|----------|---------------------------------------------|
 * | Version          | 1        | reserved; always 0                          |
 * | Header Length    | 2        | total length of the Header, this included  |
 * | Request ID       | 16       | raw UUID bytes                              |
 * | Protocol         | 1        | 0 = TCP, 1 = UDP                            |
 * | Destination Port | 2        | 1..65535                                    |
 * | Address Type     | 1        | 0 = IP, 1 = hostname                        |
 * | Address          | variable | 4 (IPv4) or 16 (IPv6) bytes, or a DNS name  |
 *
 * Pure functions, no I/O.
 *
 * @module
 */

/** Transport protocol of the relayed flow. */
export type Protocol = "tcp" | "udp";

/** Destination address named by a Header. */
export type Address =
  | { type: "ipv4"; ip: string }
  | { type: "ipv6"; ip: string }
  | { type: "hostname"; name: string };

/** A decoded (or to-be-encoded) Header. */
export interface Header {
  /** UUID text, lowercase (`crypto.randomUUID()`). */
  requestId: string;
  protocol: Protocol;
  /** Destination port, 1..65535. */
  port: number;
  address: Address;
}

/** Length of the fixed part: version 1 + length 2 + id 16 + protocol 1 + port 2 + address type 1. */
export const HEADER_FIXED_LENGTH = 23;

/** Longest DNS name accepted, in bytes (RFC 1035 presentation form, trailing dot included). */
export const MAX_HOSTNAME_LENGTH = 253;

/** Longest Header accepted: the fixed part plus the longest hostname. */
export const MAX_HEADER_LENGTH: number = HEADER_FIXED_LENGTH + MAX_HOSTNAME_LENGTH;

/** Why a Header was rejected. */
export type HeaderError =
  | "bad-version"
  | "length-too-short"
  | "length-too-long"
  | "bad-protocol"
  | "bad-address-type"
  | "bad-address-length"
  | "bad-hostname"
  | "bad-port";

/** Outcome of {@link decodeHeader}. */
export type HeaderDecodeResult =
  | { kind: "ok"; header: Header; length: number }
  | { kind: "incomplete"; needed: number }
  | { kind: "error"; error: HeaderError; message: string };

const PROTOCOL_TCP = 0;
const PROTOCOL_UDP = 1;
const ADDRESS_IP = 0;
const ADDRESS_HOSTNAME = 1;

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const LABEL_RE = /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/;

/**
 * Whether `name` is a valid DNS name for a Header: ASCII, 1..253 bytes, labels of
 * 1..63 letters, digits, `-` or `_` (not starting or ending with `-`), separated by
 * dots, an optional single trailing dot. Underscores are allowed because real
 * names use them (`_dns._udp.example`), and the system resolver accepts them.
 */
export function isValidHostname(name: string): boolean {
  if (name.length === 0 || name.length > MAX_HOSTNAME_LENGTH) return false;
  const body = name.endsWith(".") ? name.slice(0, -1) : name;
  if (body.length === 0) return false;
  for (const label of body.split(".")) {
    if (!LABEL_RE.test(label)) return false;
  }
  return true;
}

/** Parses a dotted quad into 4 bytes, or returns undefined. Leading zeros are rejected. */
export function parseIpv4(text: string): Uint8Array | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i];
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    out[i] = n;
  }
  return out;
}

/**
 * Parses a textual IPv6 address (full, compressed, or with an embedded dotted
 * quad as the last 32 bits) into 16 bytes, or returns undefined. Zones (`%eth0`)
 * are not accepted.
 */
export function parseIpv6(text: string): Uint8Array | undefined {
  if (text.length < 2 || text.length > 45) return undefined;
  let head = text;
  let tail = "";
  const dbl = text.indexOf("::");
  if (dbl !== -1) {
    if (text.indexOf("::", dbl + 1) !== -1) return undefined;
    head = text.slice(0, dbl);
    tail = text.slice(dbl + 2);
  }
  const headGroups = head === "" ? [] : head.split(":");
  const tailGroups = tail === "" ? [] : tail.split(":");
  const words: number[] = [];
  const parseGroups = (groups: string[], isLast: boolean): number[] | undefined => {
    const out: number[] = [];
    for (let i = 0; i < groups.length; i++) {
      const g = groups[i];
      if (isLast && i === groups.length - 1 && g.includes(".")) {
        const v4 = parseIpv4(g);
        if (!v4) return undefined;
        out.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
        out.push(parseInt(g, 16));
      }
    }
    return out;
  };
  const h = parseGroups(headGroups, dbl === -1);
  const t = parseGroups(tailGroups, true);
  if (!h || !t) return undefined;
  if (dbl === -1) {
    if (h.length !== 8) return undefined;
    words.push(...h);
  } else {
    const fill = 8 - h.length - t.length;
    if (fill < 1) return undefined;
    words.push(...h, ...new Array<number>(fill).fill(0), ...t);
  }
  const out = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    out[2 * i] = words[i] >> 8;
    out[2 * i + 1] = words[i] & 0xff;
  }
  return out;
}

/** Formats 4 bytes as a dotted quad. */
export function formatIpv4(b: Uint8Array): string {
  return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
}

/**
 * Formats 16 bytes as canonical IPv6 text (RFC 5952): lowercase, no leading
 * zeros, the longest run (first on ties) of two or more zero groups as `::`,
 * and IPv4-mapped addresses as `::ffff:a.b.c.d`.
 */
export function formatIpv6(b: Uint8Array): string {
  const w: number[] = [];
  for (let i = 0; i < 8; i++) w.push((b[2 * i] << 8) | b[2 * i + 1]);
  if (w[0] === 0 && w[1] === 0 && w[2] === 0 && w[3] === 0 && w[4] === 0 && w[5] === 0xffff) {
    return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  }
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (ws: number[]) => ws.map((x) => x.toString(16)).join(":");
  if (bestLen < 2) return hex(w);
  return `${hex(w.slice(0, bestStart))}::${hex(w.slice(bestStart + bestLen))}`;
}

function uuidToBytes(id: string): Uint8Array {
  const hex = id.replaceAll("-", "");
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function bytesToUuid(b: Uint8Array): string {
  let hex = "";
  for (let i = 0; i < 16; i++) hex += b[i].toString(16).padStart(2, "0");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${
    hex.slice(20)
  }`;
}

/**
 * Encodes a Header. Throws TypeError for invalid input (bad UUID, port outside
 * 1..65535, unparsable IP, invalid DNS name): such input is a bug in our own code.
 */
export function encodeHeader(h: Header): Uint8Array {
  if (typeof h.requestId !== "string" || !UUID_RE.test(h.requestId)) {
    throw new TypeError(`invalid request id ${JSON.stringify(h.requestId)}`);
  }
  if (h.protocol !== "tcp" && h.protocol !== "udp") {
    throw new TypeError(`invalid protocol ${JSON.stringify(h.protocol)}`);
  }
  if (!Number.isInteger(h.port) || h.port < 1 || h.port > 65535) {
    throw new TypeError(`invalid port ${h.port}`);
  }
  let addrType: number;
  let addr: Uint8Array;
  switch (h.address.type) {
    case "ipv4": {
      const b = parseIpv4(h.address.ip);
      if (!b) throw new TypeError(`invalid IPv4 address ${JSON.stringify(h.address.ip)}`);
      addrType = ADDRESS_IP;
      addr = b;
      break;
    }
    case "ipv6": {
      const text = h.address.ip.startsWith("[") && h.address.ip.endsWith("]")
        ? h.address.ip.slice(1, -1)
        : h.address.ip;
      const b = parseIpv6(text);
      if (!b) throw new TypeError(`invalid IPv6 address ${JSON.stringify(h.address.ip)}`);
      addrType = ADDRESS_IP;
      addr = b;
      break;
    }
    case "hostname": {
      if (!isValidHostname(h.address.name)) {
        throw new TypeError(`invalid hostname ${JSON.stringify(h.address.name)}`);
      }
      addrType = ADDRESS_HOSTNAME;
      addr = new TextEncoder().encode(h.address.name);
      break;
    }
    default:
      throw new TypeError(`invalid address ${JSON.stringify(h.address)}`);
  }
  const length = HEADER_FIXED_LENGTH + addr.length;
  const out = new Uint8Array(length);
  const dv = new DataView(out.buffer);
  out[0] = 0;
  dv.setUint16(1, length);
  out.set(uuidToBytes(h.requestId), 3);
  out[19] = h.protocol === "tcp" ? PROTOCOL_TCP : PROTOCOL_UDP;
  dv.setUint16(20, h.port);
  out[22] = addrType;
  out.set(addr, HEADER_FIXED_LENGTH);
  return out;
}

function fail(error: HeaderError, message: string): HeaderDecodeResult {
  return { kind: "error", error, message };
}

/**
 * Decodes a Header from the start of `buf`. Never throws; never reads past the
 * declared Header Length. Returns `incomplete` with the total number of bytes
 * needed when `buf` is too short to decide, `error` with a typed reason for any
 * invalid Header, or `ok` with the Header and the number of bytes it occupies
 * (bytes after it belong to the stream payload).
 */
export function decodeHeader(buf: Uint8Array): HeaderDecodeResult {
  if (buf.length < 1) return { kind: "incomplete", needed: 3 };
  if (buf[0] !== 0) return fail("bad-version", `unsupported header version ${buf[0]}`);
  if (buf.length < 3) return { kind: "incomplete", needed: 3 };
  const length = (buf[1] << 8) | buf[2];
  if (length < HEADER_FIXED_LENGTH) {
    return fail("length-too-short", `header length ${length} < ${HEADER_FIXED_LENGTH}`);
  }
  if (length > MAX_HEADER_LENGTH) {
    return fail("length-too-long", `header length ${length} > ${MAX_HEADER_LENGTH}`);
  }
  if (buf.length < length) return { kind: "incomplete", needed: length };
  const proto = buf[19];
  if (proto !== PROTOCOL_TCP && proto !== PROTOCOL_UDP) {
    return fail("bad-protocol", `unknown protocol ${proto}`);
  }
  const port = (buf[20] << 8) | buf[21];
  if (port === 0) return fail("bad-port", "destination port 0");
  const addrType = buf[22];
  const addr = buf.subarray(HEADER_FIXED_LENGTH, length);
  let address: Address;
  if (addrType === ADDRESS_IP) {
    if (addr.length === 4) address = { type: "ipv4", ip: formatIpv4(addr) };
    else if (addr.length === 16) address = { type: "ipv6", ip: formatIpv6(addr) };
    else return fail("bad-address-length", `IP address of ${addr.length} bytes (want 4 or 16)`);
  } else if (addrType === ADDRESS_HOSTNAME) {
    if (addr.length === 0) return fail("bad-address-length", "empty hostname");
    let name = "";
    for (const c of addr) {
      if (c < 0x21 || c > 0x7e) return fail("bad-hostname", "hostname is not printable ASCII");
      name += String.fromCharCode(c);
    }
    if (!isValidHostname(name)) {
      return fail("bad-hostname", `invalid hostname ${JSON.stringify(name)}`);
    }
    address = { type: "hostname", name };
  } else {
    return fail("bad-address-type", `unknown address type ${addrType}`);
  }
  return {
    kind: "ok",
    length,
    header: {
      requestId: bytesToUuid(buf.subarray(3, 19)),
      protocol: proto === PROTOCOL_TCP ? "tcp" : "udp",
      port,
      address,
    },
  };
}

/**
 * Classifies address text: a dotted quad is IPv4; a valid IPv6 text (optionally
 * in brackets) is IPv6; anything else is a hostname (not validated here).
 */
export function parseAddress(text: string): Address {
  if (parseIpv4(text)) return { type: "ipv4", ip: text };
  const inner = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  const v6 = parseIpv6(inner);
  if (v6) return { type: "ipv6", ip: formatIpv6(v6) };
  return { type: "hostname", name: text };
}

/** Text of an address alone: `1.2.3.4`, `::1`, `redis`. */
export function formatAddress(a: Address): string {
  return a.type === "hostname" ? a.name : a.ip;
}

/** The destination as `host:port`: `1.2.3.4:5000`, `[::1]:53`, `redis:6379`. */
export function formatDestination(h: Header): string {
  const a = h.address;
  if (a.type === "ipv6") {
    const ip = a.ip.startsWith("[") ? a.ip : `[${a.ip}]`;
    return `${ip}:${h.port}`;
  }
  return `${formatAddress(a)}:${h.port}`;
}
