/**
 * Throughput measurement for the tunnel Session (not a test): one stream over loopback TCP
 * between two Deno processes.
 *
 *   deno run -A bench/session.ts [MiB=1024] [streams=1]
 *   (env BENCH_CHUNK = write size, default 65536; BENCH_WINDOW = server initialWindow)
 *
 * The parent spawns a child (`--server`) that accepts one tunnel connection and, for each
 * stream, reads everything and answers with the byte count. Only 127.0.0.1 is used.
 */

import { PREFACE } from "../src/protocol/mux.ts";
import { Session, type Stream } from "../src/mux/mod.ts";
import { connTransport, prefixedTransport } from "../src/mux/mod.ts";

async function readExact(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const buf = new Uint8Array(n);
  let off = 0;
  while (off < n) {
    const r = await conn.read(buf.subarray(off));
    if (r === null) throw new Error("EOF");
    off += r;
  }
  return buf;
}

async function sink(stream: Stream): Promise<void> {
  stream.accept();
  let total = 0;
  while (true) {
    const chunk = await stream.read();
    if (chunk === null) break;
    total += chunk.length;
  }
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(total));
  await stream.write(out);
  await stream.closeWrite();
}

async function server(): Promise<void> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  console.log(`port ${(listener.addr as Deno.NetAddr).port}`);
  const conn = await listener.accept();
  listener.close();
  await readExact(conn, PREFACE.length);
  const session = new Session(prefixedTransport(new Uint8Array(0), connTransport(conn)), {
    role: "server",
    initialWindow: Number(Deno.env.get("BENCH_WINDOW") ?? 256 * 1024),
    onStream: (s) => void sink(s).catch((e) => console.error(`sink: ${e}`)),
  });
  await session.closed;
}

async function client(mib: number, streams: number): Promise<void> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", import.meta.filename!, "--server"],
    stdout: "piped",
  }).spawn();
  const reader = child.stdout.getReader();
  const { value } = await reader.read();
  const port = Number(new TextDecoder().decode(value).match(/port (\d+)/)![1]);
  reader.releaseLock();
  await child.stdout.cancel();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const session = new Session(connTransport(conn), { role: "client" });
  const per = Math.floor((mib * 1024 * 1024) / streams);
  const chunk = new Uint8Array(Number(Deno.env.get("BENCH_CHUNK") ?? 64 * 1024)).fill(7);
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: streams }, async () => {
      const s = await session.openStream(new Uint8Array([0, 0, 1]));
      for (let sent = 0; sent < per; sent += chunk.length) {
        await s.write(chunk.subarray(0, Math.min(chunk.length, per - sent)));
      }
      await s.closeWrite();
      const reply = await s.read();
      const got = Number(new DataView(reply!.buffer, reply!.byteOffset).getBigUint64(0));
      if (got !== per) throw new Error(`server got ${got}, sent ${per}`);
    }),
  );
  const secs = (performance.now() - t0) / 1000;
  console.log(
    `${streams} stream(s), ${mib} MiB in ${secs.toFixed(2)} s = ${(mib / secs).toFixed(0)} MiB/s`,
  );
  session.close("done");
  await child.status;
}

if (Deno.args[0] === "--server") await server();
else await client(Number(Deno.args[0] ?? 1024), Number(Deno.args[1] ?? 1));
