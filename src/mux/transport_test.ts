/** Transports: connTransport over loopback TCP, prefixedTransport, memoryTransportPair. */

import assert from "node:assert/strict";
import { connTransport, prefixedTransport, type Transport } from "./mod.ts";
import { memoryTransportPair } from "../../tests/_lib/memory_transport.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array | null) => (b === null ? null : new TextDecoder().decode(b));

async function tcpTransports(): Promise<[Transport, Transport]> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept();
  const conn = await Deno.connect({
    hostname: "127.0.0.1",
    port: (listener.addr as Deno.NetAddr).port,
  });
  const server = await accepted;
  listener.close();
  return [connTransport(conn), connTransport(server)];
}

Deno.test("transport: connTransport reads into one buffer; each chunk is right until the next read", async () => {
  const [a, b] = await tcpTransports();
  try {
    await a.write(enc("first"));
    const first = await b.read();
    assert.equal(dec(first), "first");
    await a.write(enc("SECOND"));
    const second = await b.read();
    assert.equal(dec(second), "SECOND");
    assert.equal(first!.buffer, second!.buffer, "no allocation per read");
    // The buffer the caller wrote from may be reused once write() resolves.
    const buf = enc("reuse");
    await a.write(buf);
    buf.fill(0);
    assert.equal(dec(await b.read()), "reuse");
  } finally {
    a.close();
    b.close();
  }
});

Deno.test("transport: connTransport EOF, close() ends a pending read, writes after close fail", async () => {
  const [a, b] = await tcpTransports();
  a.close();
  a.close(); // idempotent
  assert.equal(await b.read(), null);
  await assert.rejects(a.write(enc("x")), Deno.errors.BadResource);
  const pending = b.read();
  b.close();
  assert.equal(await pending, null);
});

Deno.test("transport: prefixedTransport yields the leftover first, then the inner transport", async () => {
  const [a, b] = memoryTransportPair();
  const p = prefixedTransport(enc("left"), b);
  await a.write(enc("over"));
  assert.equal(dec(await p.read()), "left");
  assert.equal(dec(await p.read()), "over");
  await p.write(enc("back"));
  assert.equal(dec(await a.read()), "back");
  const empty = prefixedTransport(new Uint8Array(0), a);
  await b.write(enc("direct"));
  assert.equal(dec(await empty.read()), "direct");
  p.close();
  assert.equal(await empty.read(), null);
});

Deno.test("transport: memoryTransportPair copies writes, drains before EOF, applies backpressure", async () => {
  const [a, b] = memoryTransportPair();
  const buf = enc("abc");
  await a.write(buf);
  buf.fill(0);
  await a.write(enc("def"));
  a.close();
  assert.equal(dec(await b.read()), "abc");
  assert.equal(dec(await b.read()), "def");
  assert.equal(await b.read(), null);
  await assert.rejects(b.write(enc("x")), Deno.errors.BrokenPipe);

  const [c, d] = memoryTransportPair();
  await c.write(new Uint8Array(1024 * 1024 + 1)); // now above the high-water mark
  let done = false;
  const blocked = c.write(enc("more")).then(() => (done = true));
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(done, false);
  assert.equal((await d.read())?.length, 1024 * 1024 + 1);
  await blocked;
  assert.equal(dec(await d.read()), "more");
  c.close();
  d.close();
});
