/**
 * SOCKS5 wire constants and pure codecs (RFC 1928): replies, the UDP request
 * header, and IP address text <-> bytes conversion.
 *
 * @module
 */

import { type Address, formatIpv4, formatIpv6, parseIpv4, parseIpv6 } from "../protocol/addr.ts";

/** SOCKS protocol version byte. */
export const SOCKS_VERSION = 0x05;

/** Authentication methods (RFC 1928 §3). */
export const Method = {
  /** No authentication required. */
  NoAuth: 0x00,
  /** No acceptable methods. */
  NoAcceptable: 0xff,
} as const;

/** Request commands (RFC 1928 §4). */
export const Command = {
  Connect: 0x01,
  Bind: 0x02,
  UdpAssociate: 0x03,
} as const;

/** Address types (RFC 1928 §5). */
export const AddressType = {
  IPv4: 0x01,
  Domain: 0x03,
  IPv6: 0x04,
} as const;

/** Reply codes (RFC 1928 §6). */
export const Reply = {
  Succeeded: 0x00,
  GeneralFailure: 0x01,
  NotAllowed: 0x02,
  NetworkUnreachable: 0x03,
  HostUnreachable: 0x04,
  ConnectionRefused: 0x05,
  TtlExpired: 0x06,
  CommandNotSupported: 0x07,
  AddressTypeNotSupported: 0x08,
} as const;

/**
 * A SOCKS destination: address plus port. A DOMAINNAME (ATYP 3) is a `hostname` Address holding
 * the name as sent (any bytes, Latin-1; not validated here).
 */
export interface SocksDestination {
  address: Address;
  port: number;
}

/** Result of decoding an ATYP + DST.ADDR + DST.PORT block from a buffer. */
export type AddressDecodeResult =
  | { kind: "ok"; destination: SocksDestination; length: number }
  | { kind: "incomplete"; needed: number }
  | { kind: "error"; reply: number; message: string };

/**
 * Decodes `ATYP DST.ADDR DST.PORT` starting at `offset` in `buf`.
 * `needed` in an incomplete result is the total length (from `offset`) required.
 */
export function decodeSocksAddress(buf: Uint8Array, offset = 0): AddressDecodeResult {
  const avail = buf.length - offset;
  if (avail < 1) return { kind: "incomplete", needed: 1 };
  const atyp = buf[offset];
  let addrLen: number;
  let addrStart = offset + 1;
  if (atyp === AddressType.IPv4) addrLen = 4;
  else if (atyp === AddressType.IPv6) addrLen = 16;
  else if (atyp === AddressType.Domain) {
    if (avail < 2) return { kind: "incomplete", needed: 2 };
    addrLen = buf[offset + 1];
    addrStart = offset + 2;
    if (addrLen === 0) {
      return { kind: "error", reply: Reply.GeneralFailure, message: "empty domain name" };
    }
  } else {
    return {
      kind: "error",
      reply: Reply.AddressTypeNotSupported,
      message: `address type ${atyp} not supported`,
    };
  }
  const total = addrStart - offset + addrLen + 2;
  if (avail < total) return { kind: "incomplete", needed: total };
  const raw = buf.subarray(addrStart, addrStart + addrLen);
  const port = (buf[addrStart + addrLen] << 8) | buf[addrStart + addrLen + 1];
  let address: Address;
  if (atyp === AddressType.IPv4) address = { type: "ipv4", ip: formatIpv4(raw) };
  else if (atyp === AddressType.IPv6) address = { type: "ipv6", ip: formatIpv6(raw) };
  else address = { type: "hostname", name: latin1(raw) };
  return { kind: "ok", destination: { address, port }, length: total };
}

/** Encodes `ATYP DST.ADDR DST.PORT` for a destination. Throws TypeError on invalid input. */
export function encodeSocksAddress(dest: SocksDestination): Uint8Array {
  const { address, port } = dest;
  if (!Number.isInteger(port) || port < 0 || port > 0xffff) {
    throw new TypeError(`invalid port ${port}`);
  }
  let head: number[];
  let body: Uint8Array;
  if (address.type === "ipv4") {
    const b = parseIpv4(address.ip);
    if (!b) throw new TypeError(`invalid IPv4 address ${address.ip}`);
    head = [AddressType.IPv4];
    body = b;
  } else if (address.type === "ipv6") {
    const b = parseIpv6(stripIpv6(address.ip));
    if (!b) throw new TypeError(`invalid IPv6 address ${address.ip}`);
    head = [AddressType.IPv6];
    body = b;
  } else {
    body = new TextEncoder().encode(address.name);
    if (body.length < 1 || body.length > 255) {
      throw new TypeError(`invalid domain name length ${body.length}`);
    }
    head = [AddressType.Domain, body.length];
  }
  const out = new Uint8Array(head.length + body.length + 2);
  out.set(head, 0);
  out.set(body, head.length);
  out[out.length - 2] = port >> 8;
  out[out.length - 1] = port & 0xff;
  return out;
}

/** Converts a Deno address hostname (IPv4 or IPv6 text) into an Address. */
export function socksAddressFromIp(ip: string): Address {
  return parseIpv4(ip) ? { type: "ipv4", ip } : { type: "ipv6", ip: stripIpv6(ip) };
}

/** Removes brackets and a zone (`%eth0`) from IPv6 text. */
function stripIpv6(ip: string): string {
  const inner = ip.startsWith("[") && ip.endsWith("]") ? ip.slice(1, -1) : ip;
  const zone = inner.indexOf("%");
  return zone >= 0 ? inner.slice(0, zone) : inner;
}

/**
 * Encodes a SOCKS5 reply: `VER REP RSV ATYP BND.ADDR BND.PORT`.
 * The bound address defaults to 0.0.0.0:0 (we do not know the agent's local address).
 */
export function encodeReply(
  reply: number,
  bound: SocksDestination = { address: { type: "ipv4", ip: "0.0.0.0" }, port: 0 },
): Uint8Array {
  const addr = encodeSocksAddress(bound);
  const out = new Uint8Array(3 + addr.length);
  out[0] = SOCKS_VERSION;
  out[1] = reply;
  out[2] = 0;
  out.set(addr, 3);
  return out;
}

/** A parsed SOCKS5 UDP request header (RFC 1928 §7) and its payload. */
export interface UdpPacket {
  frag: number;
  destination: SocksDestination;
  /** The raw `ATYP DST.ADDR DST.PORT` bytes, as received. */
  rawAddress: Uint8Array;
  data: Uint8Array;
}

/** Decodes a datagram received on the UDP relay; returns an error string if malformed. */
export function decodeUdpPacket(buf: Uint8Array): UdpPacket | string {
  if (buf.length < 4) return "datagram too short";
  const frag = buf[2];
  const r = decodeSocksAddress(buf, 3);
  if (r.kind === "incomplete") return "datagram too short";
  if (r.kind === "error") return r.message;
  const end = 3 + r.length;
  return {
    frag,
    destination: r.destination,
    rawAddress: buf.slice(3, end),
    data: buf.subarray(end),
  };
}

/** Wraps a reply datagram: `RSV(2)=0 FRAG=0 ATYP DST.ADDR DST.PORT DATA`. */
export function encodeUdpPacket(rawAddress: Uint8Array, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(3 + rawAddress.length + data.length);
  out.set(rawAddress, 3);
  out.set(data, 3 + rawAddress.length);
  return out;
}

function latin1(b: Uint8Array): string {
  let s = "";
  for (const c of b) s += String.fromCharCode(c);
  return s;
}
