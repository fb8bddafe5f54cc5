/**
 * HTTP proxy request parsing for the proxy port: `CONNECT host:port` tunnels
 * and absolute-form plain-HTTP requests (`GET http://host/path`).
 *
 * @module
 */

/** Maximum size of the request line plus headers we accept. */
export const MAX_HTTP_HEAD = 16 * 1024;

/** A parsed request head the proxy can act on. */
export type HttpProxyRequest =
  | {
    kind: "connect";
    host: string;
    port: number;
  }
  | {
    kind: "forward";
    host: string;
    port: number;
    /** The head rewritten for the origin server (origin-form target, no proxy headers, `Connection: close`). */
    head: Uint8Array;
  };

/** A parse failure and the HTTP status to answer with. */
export interface HttpProxyError {
  kind: "error";
  code: number;
  reason: string;
  message: string;
}

/**
 * Splits `host:port` (host may be a bracketed IPv6 literal). Returns null if
 * malformed. `defaultPort` is used when no port is given (plain-HTTP only).
 */
export function splitHostPort(
  authority: string,
  defaultPort?: number,
): { host: string; port: number } | null {
  let host: string;
  let portText: string | undefined;
  if (authority.startsWith("[")) {
    const close = authority.indexOf("]");
    if (close < 0) return null;
    host = authority.slice(1, close);
    const rest = authority.slice(close + 1);
    if (rest !== "") {
      if (!rest.startsWith(":")) return null;
      portText = rest.slice(1);
    }
  } else {
    const colon = authority.lastIndexOf(":");
    if (colon >= 0) {
      host = authority.slice(0, colon);
      portText = authority.slice(colon + 1);
      if (host.includes(":")) return null; // unbracketed IPv6
    } else {
      host = authority;
    }
  }
  if (host === "") return null;
  let port: number;
  if (portText === undefined) {
    if (defaultPort === undefined) return null;
    port = defaultPort;
  } else {
    if (!/^\d{1,5}$/.test(portText)) return null;
    port = Number(portText);
  }
  if (port < 1 || port > 65535) return null;
  return { host, port };
}

const HOP_BY_HOP = new Set([
  "proxy-connection",
  "proxy-authorization",
  "connection",
  "keep-alive",
]);

/** Parses a request head (request line + headers + blank line). */
export function parseHttpProxyRequest(head: Uint8Array): HttpProxyRequest | HttpProxyError {
  const text = new TextDecoder("latin1").decode(head);
  const lines = text.split("\r\n");
  const requestLine = lines[0];
  const m = /^([A-Za-z]+) (\S+) (HTTP\/1\.[01])$/.exec(requestLine);
  if (!m) return bad(400, "Bad Request", "malformed request line");
  const [, method, target, version] = m;
  if (method === "CONNECT") {
    const hp = splitHostPort(target);
    if (!hp) return bad(400, "Bad Request", `invalid CONNECT target ${JSON.stringify(target)}`);
    return { kind: "connect", ...hp };
  }
  const um = /^http:\/\/([^/?#]+)([^#]*)/i.exec(target);
  if (!um) {
    return bad(
      400,
      "Bad Request",
      "this is a proxy: use CONNECT or an absolute http:// URL",
    );
  }
  const authority = um[1];
  if (authority.includes("@")) return bad(400, "Bad Request", "credentials in URL not supported");
  const hp = splitHostPort(authority, 80);
  if (!hp) return bad(400, "Bad Request", `invalid URL host ${JSON.stringify(authority)}`);
  const path = um[2] === "" ? "/" : um[2].startsWith("/") ? um[2] : `/${um[2]}`;
  const out = [`${method} ${path} ${version}`];
  for (const line of lines.slice(1)) {
    if (line === "") continue;
    const colon = line.indexOf(":");
    if (colon <= 0) return bad(400, "Bad Request", "malformed header line");
    const name = line.slice(0, colon).trim().toLowerCase();
    if (HOP_BY_HOP.has(name)) continue;
    out.push(line);
  }
  out.push("Connection: close", "", "");
  return {
    kind: "forward",
    ...hp,
    head: latin1Bytes(out.join("\r\n")),
  };
}

/** Encodes a complete, closing HTTP response with a plain-text body. */
export function httpErrorResponse(code: number, reason: string, message: string): Uint8Array {
  const body = new TextEncoder().encode(`${message}\n`);
  const head = `HTTP/1.1 ${code} ${reason}\r\n` +
    `Content-Type: text/plain; charset=utf-8\r\n` +
    `Content-Length: ${body.length}\r\n` +
    `Connection: close\r\n\r\n`;
  const h = new TextEncoder().encode(head);
  const out = new Uint8Array(h.length + body.length);
  out.set(h, 0);
  out.set(body, h.length);
  return out;
}

/** The response that opens a CONNECT tunnel. */
export const HTTP_CONNECT_OK = new TextEncoder().encode(
  "HTTP/1.1 200 Connection established\r\n\r\n",
);

function bad(code: number, reason: string, message: string): HttpProxyError {
  return { kind: "error", code, reason, message };
}

function latin1Bytes(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i) & 0xff;
  return out;
}
