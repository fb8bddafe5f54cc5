/**
 * Destination addresses: the one validator of IP and hostname text (used by the Header codec,
 * the SOCKS codec, `ip/` and `host/` targets and `--address`), their byte forms, and `host:port`
 * text. Pure functions, no I/O.
 *
 * @module
 */

/** A destination address: an IP (text) or a DNS name. */
export type Address =
  | { type: "ipv4"; ip: string }
  | { type: "ipv6"; ip: string }
  | { type: "hostname"; name: string };

/** Longest DNS name accepted, in bytes (RFC 1035 presentation form, trailing dot included). */
export const MAX_HOSTNAME_LENGTH = 253;

const LABEL_RE = /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/;

/**
 * Whether `name` is a valid DNS name: ASCII, 1..253 bytes, labels of 1..63 letters, digits, `-`
 * or `_` (not starting or ending with `-`), separated by dots, an optional single trailing dot.
 * Underscores are allowed because real names use them (`_dns._udp.example`), and the system
 * resolver accepts them.
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
 * Parses a textual IPv6 address (full, compressed, or with an embedded dotted quad as the last
 * 32 bits) into 16 bytes, or returns undefined. Brackets and zones (`%eth0`) are not accepted.
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

/** True if `text` is a dotted-quad IPv4 address (no leading zeros). */
export function isIPv4(text: string): boolean {
  return parseIpv4(text) !== undefined;
}

/** True if `text` is a textual IPv6 address (optionally with an embedded IPv4 tail; no brackets). */
export function isIPv6(text: string): boolean {
  return parseIpv6(text) !== undefined;
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

/**
 * Classifies address text: a dotted quad is IPv4; a valid IPv6 text (optionally
 * in brackets) is IPv6, in canonical form; anything else is a hostname (not validated here).
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

/** `host:port`, IPv6 in brackets: `127.0.0.1:8080`, `[::1]:53`, `redis:6379`. */
export function hostPort(host: string, port: number): string {
  return host.includes(":") && !host.startsWith("[") ? `[${host}]:${port}` : `${host}:${port}`;
}
