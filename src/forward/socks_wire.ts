/**
 * SOCKS5 wire constants and pure codecs (RFC 1928): replies, the UDP request
 * header, and IP address text <-> bytes conversion.
 *
 * @module
 */

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

/** A destination as carried in a SOCKS request or UDP header. */
export type SocksAddress =
  | { type: "ipv4"; ip: string }
  | { type: "ipv6"; ip: string }
  | { type: "domain"; name: string };

/** A SOCKS destination: address plus port. */
export interface SocksDestination {
  address: SocksAddress;
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
  let address: SocksAddress;
  if (atyp === AddressType.IPv4) address = { type: "ipv4", ip: formatIPv4(raw) };
  else if (atyp === AddressType.IPv6) address = { type: "ipv6", ip: formatIPv6(raw) };
  else address = { type: "domain", name: latin1(raw) };
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
    const b = parseIPv4(address.ip);
    if (!b) throw new TypeError(`invalid IPv4 address ${address.ip}`);
    head = [AddressType.IPv4];
    body = b;
  } else if (address.type === "ipv6") {
    const b = parseIPv6(address.ip);
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

/** Converts a Deno address hostname (IPv4 or IPv6 text) into a SOCKS address. */
export function socksAddressFromIp(ip: string): SocksAddress {
  return parseIPv4(ip) ? { type: "ipv4", ip } : { type: "ipv6", ip };
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

/** Formats 4 bytes as a dotted quad. */
export function formatIPv4(b: Uint8Array): string {
  return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
}

/** Formats 16 bytes as RFC 5952 compressed IPv6 text. */
export function formatIPv6(b: Uint8Array): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((b[i] << 8) | b[i + 1]);
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(":");
  const left = hex.slice(0, bestStart).join(":");
  const right = hex.slice(bestStart + bestLen).join(":");
  return `${left}::${right}`;
}

/** Parses a dotted quad; returns null if it is not one. */
export function parseIPv4(text: string): Uint8Array | null {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i];
    if (!/^\d{1,3}$/.test(p)) return null;
    const n = Number(p);
    if (n > 255) return null;
    out[i] = n;
  }
  return out;
}

/** Parses IPv6 text (compressed forms, embedded IPv4, optional brackets or zone); null if invalid. */
export function parseIPv6(text: string): Uint8Array | null {
  let s = text;
  if (s.startsWith("[") && s.endsWith("]")) s = s.slice(1, -1);
  const zone = s.indexOf("%");
  if (zone >= 0) s = s.slice(0, zone);
  const groups: number[] = [];
  let tail: number[] = [];
  const halves = s.split("::");
  if (halves.length > 2) return null;
  const parseSide = (side: string, allowV4: boolean): number[] | null => {
    if (side === "") return [];
    const out: number[] = [];
    const parts = side.split(":");
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i];
      if (allowV4 && i === parts.length - 1 && p.includes(".")) {
        const v4 = parseIPv4(p);
        if (!v4) return null;
        out.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(p)) return null;
        out.push(parseInt(p, 16));
      }
    }
    return out;
  };
  const head = parseSide(halves[0], halves.length === 1);
  if (!head) return null;
  groups.push(...head);
  if (halves.length === 2) {
    const t = parseSide(halves[1], true);
    if (!t) return null;
    tail = t;
    if (groups.length + tail.length > 7) return null;
    while (groups.length + tail.length < 8) groups.push(0);
    groups.push(...tail);
  } else if (groups.length !== 8) return null;
  const out = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    out[2 * i] = groups[i] >> 8;
    out[2 * i + 1] = groups[i] & 0xff;
  }
  return out;
}

function latin1(b: Uint8Array): string {
  let s = "";
  for (const c of b) s += String.fromCharCode(c);
  return s;
}
