/** A tiny DNS client (one TXT question over UDP) so the demo needs no `dig`. */

function encodeName(name: string): number[] {
  return [...name.split(".").flatMap((l) => [l.length, ...new TextEncoder().encode(l)]), 0];
}

function skipName(buf: Uint8Array, off: number): number {
  while (buf[off] !== 0) {
    if ((buf[off] & 0xc0) === 0xc0) return off + 2;
    off += buf[off] + 1;
  }
  return off + 1;
}

/** Sends one TXT query and returns the first TXT string of the answer. */
export async function dnsQuery(
  server: string,
  port: number,
  name: string,
  timeoutMs = 5000,
): Promise<string> {
  const id = Math.floor(Math.random() * 65535);
  const query = new Uint8Array([
    id >> 8,
    id & 255,
    1,
    0,
    0,
    1,
    0,
    0,
    0,
    0,
    0,
    0,
    ...encodeName(name),
    0,
    16,
    0,
    1,
  ]);
  const sock = Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
  try {
    for (let attempt = 0; attempt < 3; attempt++) {
      await sock.send(query, { transport: "udp", hostname: server, port });
      const timer = new Promise<null>((r) => setTimeout(() => r(null), timeoutMs / 3));
      const got = await Promise.race([sock.receive(), timer]);
      if (!got) continue;
      const buf = got[0];
      if (((buf[0] << 8) | buf[1]) !== id || ((buf[6] << 8) | buf[7]) === 0) {
        throw new Error(`no answer for ${name}`);
      }
      let off = skipName(buf, 12) + 4;
      off = skipName(buf, off);
      const type = (buf[off] << 8) | buf[off + 1];
      off += 10;
      if (type !== 16) throw new Error(`unexpected answer type ${type}`);
      return new TextDecoder().decode(buf.subarray(off + 1, off + 1 + buf[off]));
    }
    throw new Error(`no DNS answer from ${server}:${port}`);
  } finally {
    sock.close();
  }
}
