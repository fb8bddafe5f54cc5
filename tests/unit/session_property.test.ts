/** Randomized Session runs: many streams, tiny windows, chopped transport writes. */

import assert from "node:assert/strict";
import fc from "fast-check";
import { Session, type Stream } from "../../src/tunnel/session.ts";
import { memoryTransportPair, type Transport } from "../../src/tunnel/transport.ts";
import { acceptPreface, pseudoRandom, Queue, readAll, sha256 } from "./session_helpers.ts";

/** Splits every write into pieces of the given sizes (cycled), so frames straddle reads. */
function chopped(inner: Transport, sizes: number[]): Transport {
  let i = 0;
  return {
    read: () => inner.read(),
    async write(chunk: Uint8Array): Promise<void> {
      let off = 0;
      while (off < chunk.length) {
        const n = sizes[i++ % sizes.length];
        await inner.write(chunk.subarray(off, off + n));
        off += n;
      }
    },
    close: () => inner.close(),
  };
}

async function writeInPieces(s: Stream, data: Uint8Array, piece: number): Promise<void> {
  for (let off = 0; off < data.length; off += piece) {
    await s.write(data.subarray(off, off + piece));
  }
  await s.closeWrite();
}

const streamSpec = fc.record({
  up: fc.integer({ min: 0, max: 150_000 }),
  down: fc.integer({ min: 0, max: 150_000 }),
  piece: fc.integer({ min: 1, max: 70_000 }),
  serverFinFirst: fc.boolean(),
});

Deno.test("session property: all bytes of all streams arrive intact, whatever the windows and chunking", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(streamSpec, { minLength: 1, maxLength: 6 }),
      fc.integer({ min: 512, max: 70_000 }),
      fc.integer({ min: 512, max: 70_000 }),
      fc.array(fc.integer({ min: 1, max: 100_000 }), { minLength: 1, maxLength: 5 }),
      async (specs, clientWindow, serverWindow, sizes) => {
        const [a, b] = memoryTransportPair();
        const client = new Session(chopped(a, sizes), {
          role: "client",
          initialWindow: clientWindow,
          maxWindow: clientWindow,
        });
        const streams = new Queue<Stream>();
        const server = new Session(chopped(await acceptPreface(b), sizes), {
          role: "server",
          initialWindow: serverWindow,
          maxWindow: serverWindow,
          onStream: (s) => streams.push(s),
        });
        try {
          await Promise.all(specs.map(async (spec, i) => {
            const up = pseudoRandom(spec.up, 2 * i + 1);
            const down = pseudoRandom(spec.down, 2 * i + 2);
            const opening = client.openStream(new Uint8Array([0, 0, i]));
            const srv = await streams.next();
            srv.accept();
            const c = await opening;
            const serverSide = async () => {
              if (spec.serverFinFirst) {
                await writeInPieces(srv, down, spec.piece);
                return await readAll(srv);
              }
              const got = await readAll(srv);
              await writeInPieces(srv, down, spec.piece);
              return got;
            };
            const [gotUp, gotDown] = await Promise.all([
              serverSide(),
              readAll(c),
              writeInPieces(c, up, spec.piece),
            ]);
            assert.equal(sha256(gotUp), sha256(up));
            assert.equal(sha256(gotDown), sha256(down));
          }));
          assert.equal(client.activeStreams, 0);
          assert.equal(server.activeStreams, 0);
        } finally {
          client.close("done");
          server.close("done");
          await Promise.all([client.closed, server.closed]);
        }
      },
    ),
    { numRuns: 25 },
  );
});
