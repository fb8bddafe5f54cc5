import type { Stream } from "../tunnel/session.ts";

const BUF = 64 * 1024;

/** Writes all of `data` to a Deno writer. */
export async function writeAll(w: Deno.Conn, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await w.write(data.subarray(off));
}

/**
 * Relays bytes between a local TCP connection and a tunnel stream until both directions end.
 * Half-close is preserved: EOF from the local side becomes closeWrite() on the stream and vice versa.
 * Returns the byte counts; never throws (errors end the relay and reset the stream).
 */
export async function relayConn(
  conn: Deno.Conn,
  stream: Stream,
): Promise<{ up: number; down: number }> {
  let up = 0;
  let down = 0;
  let failed = false;
  const fail = (why: string) => {
    if (failed) return;
    failed = true;
    stream.reset(why);
    try {
      conn.close();
    } catch {
      // already closed
    }
  };
  const upstream = (async () => {
    try {
      // Stream.write copies the bytes into its frame batch, so one buffer serves every read.
      const buf = new Uint8Array(BUF);
      while (true) {
        const n = await conn.read(buf);
        if (n === null) break;
        up += n;
        await stream.write(buf.subarray(0, n));
      }
      await stream.closeWrite();
    } catch (e) {
      fail(`local read: ${(e as Error).message}`);
    }
  })();
  const downstream = (async () => {
    try {
      while (true) {
        const chunk = await stream.read();
        if (chunk === null) break;
        down += chunk.length;
        await writeAll(conn, chunk);
      }
      await conn.closeWrite().catch(() => {});
    } catch (e) {
      fail(`local write: ${(e as Error).message}`);
    }
  })();
  await Promise.all([upstream, downstream]);
  if (!failed) {
    try {
      conn.close();
    } catch {
      // already closed
    }
  }
  return { up, down };
}
