/**
 * FrameWriter batching: on a transport with `coalesceWrites`, frames queued during one
 * event-loop turn share one transport write; datagram order and boundaries survive; a lone
 * frame is still written at once (no timer).
 */

import assert from "node:assert/strict";
import { encodeUdpFrame, UdpFrameDecoder } from "../protocol/udp.ts";
import { BATCH_SIZE } from "./options.ts";
import { Session, type Stream } from "./mod.ts";
import { type Transport } from "./mod.ts";
import { memoryTransportPair } from "../../tests/_lib/memory_transport.ts";
import { acceptPreface, Queue } from "../../tests/_lib/session.ts";

/** Wraps a transport, counting writes (and keeping its `coalesceWrites` hint). */
function counting(t: Transport): Transport & { writes: number } {
  const w = {
    writes: 0,
    coalesceWrites: t.coalesceWrites,
    read: () => t.read(),
    write(chunk: Uint8Array) {
      w.writes++;
      return t.write(chunk);
    },
    close: () => t.close(),
  };
  return w;
}

async function sessions(coalesceWrites: boolean) {
  const [a, b] = memoryTransportPair({ coalesceWrites });
  const clientT = counting(a);
  const client = new Session(clientT, { role: "client" });
  const streams = new Queue<Stream>();
  const server = new Session(await acceptPreface(b), {
    role: "server",
    onStream: (s) => streams.push(s),
  });
  return {
    client,
    clientT,
    streams,
    async close() {
      client.close("test done");
      server.close("test done");
      await Promise.all([client.closed, server.closed]);
      await new Promise((r) => setTimeout(r, 0));
    },
  };
}

/** Datagrams of assorted sizes (including empty ones), each filled with its index. */
function datagrams(n: number): Uint8Array[] {
  return Array.from(
    { length: n },
    (_, i) => new Uint8Array(i % 7 === 0 ? 0 : (i * 37) % 1400 + 1).fill(i & 0xff),
  );
}

async function readDatagrams(stream: Stream): Promise<Uint8Array[]> {
  const decoder = new UdpFrameDecoder();
  const out: Uint8Array[] = [];
  while (true) {
    const chunk = await stream.read();
    if (chunk === null) break;
    out.push(...decoder.push(chunk));
  }
  assert.equal(decoder.pending, 0);
  return out;
}

/** Opens a stream from the client and accepts it on the server; both ends. */
async function openAccepted(p: Awaited<ReturnType<typeof sessions>>) {
  const opening = p.client.openStream(new Uint8Array([1]));
  const server = await p.streams.next();
  server.accept();
  return { stream: await opening, server };
}

for (const coalesceWrites of [true, false]) {
  Deno.test(`frame writer (coalesceWrites: ${coalesceWrites}): a burst of datagrams keeps order and boundaries`, async () => {
    const p = await sessions(coalesceWrites);
    try {
      const { stream, server } = await openAccepted(p);
      const received = readDatagrams(server);
      await new Promise((r) => setTimeout(r, 10)); // let PING/STATUS traffic settle
      const sent = datagrams(200);
      const before = p.clientT.writes;
      // One burst within one turn, as a UDP listener produces it: writes are not awaited.
      await Promise.all(sent.map((d) => stream.write(encodeUdpFrame(d))));
      await new Promise((r) => setTimeout(r, 10));
      const burstWrites = p.clientT.writes - before;
      await stream.closeWrite();
      const got = await received;
      assert.equal(got.length, sent.length);
      for (let i = 0; i < sent.length; i++) assert.deepEqual(got[i], sent[i], `datagram ${i}`);
      // Frames share writes up to the batch size (one more write for a batch cut short).
      const bytes = sent.reduce((n, d) => n + d.length + 2, 0);
      const most = Math.ceil(bytes / BATCH_SIZE) + 1;
      if (coalesceWrites) assert.ok(burstWrites <= most, `${burstWrites} writes for the burst`);
      else assert.ok(burstWrites >= 1);
    } finally {
      await p.close();
    }
  });
}

Deno.test("frame writer (coalesceWrites): a lone frame is written before any timer fires", async () => {
  const p = await sessions(true);
  try {
    const { stream, server } = await openAccepted(p);
    await new Promise((r) => setTimeout(r, 10));
    const before = p.clientT.writes;
    await stream.write(encodeUdpFrame(new Uint8Array([42])));
    await new Promise((r) => setTimeout(r, 0));
    assert.equal(p.clientT.writes, before + 1);
    assert.deepEqual(await server.read(), new Uint8Array([0, 1, 42]));
  } finally {
    await p.close();
  }
});
