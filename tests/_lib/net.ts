/** Small network helpers for tests (loopback only). */

/** Reads exactly `n` bytes from `conn` (throws on early EOF). */
export async function readExactly(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let off = 0;
  while (off < n) {
    const k = await conn.read(out.subarray(off));
    if (k === null) throw new Error(`EOF after ${off} of ${n} bytes`);
    off += k;
  }
  return out;
}

/** The chunks one after the other, in one array. */
export function concat(parts: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/**
 * Reads `conn` until EOF, or until `max` bytes (default: no limit); returns everything. A reset
 * by the peer counts as the end; other errors are thrown.
 */
export async function readAll(conn: Deno.Conn, max = Infinity): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  const buf = new Uint8Array(64 * 1024);
  let total = 0;
  while (total < max) {
    let k: number | null;
    try {
      k = await conn.read(buf);
    } catch (err) {
      if (err instanceof Deno.errors.ConnectionReset) break;
      throw err;
    }
    if (k === null) break;
    parts.push(buf.slice(0, k));
    total += k;
  }
  return concat(parts);
}

/** Reads a stream (a mux Stream, or anything with `read()` → chunk | null) to its end. */
export async function readStream(
  stream: { read(): Promise<Uint8Array | null> },
): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for (;;) {
    const chunk = await stream.read();
    if (chunk === null) break;
    parts.push(chunk.slice());
  }
  return concat(parts);
}

/** Writes all of `data`. */
export async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await conn.write(data.subarray(off));
}

/** A TCP port on 127.0.0.1 that nothing listens on (bound then released). */
export function closedPort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** A random loopback address 127.A.B.C avoiding 127.0.0.1 (for servers on fixed ports like 53). */
export function randomLoopback(): string {
  const b = crypto.getRandomValues(new Uint8Array(2));
  return `127.${100 + (b[0] % 100)}.${b[1]}.53`;
}

/** Resolves after `ms` (for polling loops; never for assertions). */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Runs curl with `args` (at most `maxTimeS` seconds), ignoring any proxy settings of the
 * environment so that nothing redirects or bypasses the proxy under test.
 */
export async function curlNoProxy(
  args: string[],
  maxTimeS: number,
): Promise<{ code: number; stdout: Uint8Array; stderr: string }> {
  const out = await new Deno.Command("curl", {
    args: ["--silent", "--show-error", "--max-time", String(maxTimeS), ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: {
      http_proxy: "",
      https_proxy: "",
      HTTP_PROXY: "",
      HTTPS_PROXY: "",
      ALL_PROXY: "",
      all_proxy: "",
      NO_PROXY: "",
      no_proxy: "",
    },
  }).output();
  return { code: out.code, stdout: out.stdout, stderr: new TextDecoder().decode(out.stderr) };
}
