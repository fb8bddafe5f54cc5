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
 * Addresses are validated and converted by addr.ts. Pure functions, no I/O.
 *
 * @module
 */

import {
  type Address,
  formatAddress,
  formatIpv4,
  formatIpv6,
  hostPort,
  isValidHostname,
  MAX_HOSTNAME_LENGTH,
  parseIpv4,
  parseIpv6,
} from "./addr.ts";

/** Transport protocol of the relayed flow. */
export type Protocol = "tcp" | "udp";

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

function uuidToBytes(id: string): Uint8Array {
  const hex = id.replaceAll("-", "");
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

const HEX_DIGITS = "0123456789abcdef";

/**
 * The UUID text of 16 bytes, as one flat string: the agent keeps a request's id for as long as
 * the request runs, and a string built by concatenation would be a tree of pieces.
 */
function bytesToUuid(b: Uint8Array): string {
  const codes = new Array<number>(36);
  let j = 0;
  for (let i = 0; i < 16; i++) {
    if (i === 4 || i === 6 || i === 8 || i === 10) codes[j++] = 0x2d; // "-"
    codes[j++] = HEX_DIGITS.charCodeAt(b[i] >> 4);
    codes[j++] = HEX_DIGITS.charCodeAt(b[i] & 15);
  }
  return String.fromCharCode(...codes);
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

/** The destination as `host:port`: `1.2.3.4:5000`, `[::1]:53`, `redis:6379`. */
export function formatDestination(h: Header): string {
  return hostPort(formatAddress(h.address), h.port);
}
