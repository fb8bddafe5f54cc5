/** Randomized Session runs: many streams, tiny windows, chopped transport writes. */

import assert from "node:assert/strict";
import fc from "fast-check";
import { encodeFrame, type Frame } from "../protocol/mux.ts";
import { Session, type Stream } from "./mod.ts";
import { type Transport } from "./mod.ts";
import { memoryTransportPair } from "../../tests/_lib/memory_transport.ts";
import { arbFrame } from "../../tests/_lib/mux_arbitrary.ts";
import { acceptPreface, pseudoRandom, Queue, sha256 } from "../../tests/_lib/session.ts";
import { readStream } from "../../tests/_lib/net.ts";

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
        const client = new Session(chopped(a, [...sizes, 65536]), {
          role: "client",
          initialWindow: clientWindow,
          maxWindow: clientWindow,
        });
        const streams = new Queue<Stream>();
        const server = new Session(chopped(await acceptPreface(b), [...sizes, 65536]), {
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
                return await readStream(srv);
              }
              const got = await readStream(srv);
              await writeInPieces(srv, down, spec.piece);
              return got;
            };
            const [gotUp, gotDown] = await Promise.all([
              serverSide(),
              readStream(c),
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

/** Runs `p` but fails (instead of hanging forever) if it has not settled after `ms`. */
async function settlesWithin<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const guard = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} hung`)), ms);
  });
  try {
    return await Promise.race([p, guard]);
  } finally {
    clearTimeout(timer);
  }
}

const chaos = fc.record({
  streams: fc.integer({ min: 1, max: 5 }),
  bytes: fc.integer({ min: 0, max: 300_000 }),
  window: fc.integer({ min: 1024, max: 100_000 }),
  // What goes wrong, and after how many of the victim's reads/writes.
  action: fc.constantFrom(
    "client-close",
    "server-close",
    "client-reset",
    "server-reset",
    "client-goaway",
    "server-goaway",
  ),
  victim: fc.nat(),
  after: fc.integer({ min: 0, max: 20 }),
});

Deno.test("session property: closes, resets and go-aways at any point end every operation (no hang, no unhandled rejection)", async () => {
  await fc.assert(
    fc.asyncProperty(chaos, async (c) => {
      const [a, b] = memoryTransportPair();
      const opts = { initialWindow: c.window, maxWindow: c.window };
      const client = new Session(a, { role: "client", ...opts });
      const streams = new Queue<Stream>();
      const server = new Session(await acceptPreface(b), {
        role: "server",
        ...opts,
        onStream: (s) => streams.push(s),
      });
      const victim = c.victim % c.streams;
      let ops = 0;
      const maybeStrike = (i: number, cs: Stream, ss: Stream) => {
        if (i !== victim || ops++ !== c.after) return;
        switch (c.action) {
          case "client-close":
            return client.close("chaos");
          case "server-close":
            return server.close("chaos");
          case "client-reset":
            return cs.reset("chaos");
          case "server-reset":
            return ss.reset("chaos");
          case "client-goaway":
            return client.goAway();
          case "server-goaway":
            return server.goAway();
        }
      };
      const runStream = async (i: number) => {
        const opening = client.openStream(new Uint8Array([0, 0, i]));
        const ss = await streams.next();
        ss.accept();
        const cs = await opening;
        const data = pseudoRandom(c.bytes, i + 1);
        const piece = 10_000;
        const pump = async (from: Stream, to: Stream) => {
          const writing = (async () => {
            for (let off = 0; off < data.length; off += piece) {
              maybeStrike(i, cs, ss);
              await from.write(data.subarray(off, off + piece));
            }
            await from.closeWrite();
          })();
          const reading = (async () => {
            let n = 0;
            while (true) {
              maybeStrike(i, cs, ss);
              const chunk = await to.read();
              if (chunk === null) return n;
              n += chunk.length;
            }
          })();
          const [w, r] = await Promise.allSettled([writing, reading]);
          return { w, r };
        };
        return await Promise.all([pump(cs, ss), pump(ss, cs)]);
      };
      const results = await settlesWithin(
        Promise.allSettled(Array.from({ length: c.streams }, (_, i) => runStream(i))),
        20_000,
        "streams",
      );
      // A reset harms only the victim's stream; a go-away harms no stream that was open.
      const goAway = c.action.endsWith("goaway");
      if (c.action.endsWith("reset") || goAway) {
        results.forEach((r, i) => {
          if (i === victim && !goAway) return;
          if (goAway && r.status === "rejected") {
            // Opened after the go-away: refused, which is fine.
            assert.match(String(r.reason), /going away/);
            return;
          }
          assert.equal(r.status, "fulfilled");
          if (r.status === "fulfilled") {
            for (const dir of r.value) {
              assert.equal(dir.w.status, "fulfilled");
              assert.deepEqual(dir.r, { status: "fulfilled", value: c.bytes });
            }
          }
        });
      }
      client.close("done");
      server.close("done");
      await settlesWithin(Promise.all([client.closed, server.closed]), 20_000, "close");
    }),
    { numRuns: 60, endOnFailure: true }, // no shrinking: a hang costs the guard time per run
  );
});

/** Frames aimed at a few low stream ids, so they hit streams that exist. */
const hostileFrame = arbFrame.map((f): Frame =>
  "streamId" in f ? { ...f, streamId: (f.streamId % 8) + 1 } : f
);

Deno.test("session property: any sequence of frames from the peer ends at most that session, cleanly", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom("client" as const, "server" as const),
      fc.array(hostileFrame, { maxLength: 30 }),
      fc.array(fc.constantFrom("accept", "reject", "ignore", "reset"), {
        minLength: 8,
        maxLength: 8,
      }),
      async (role, frames, answers) => {
        const [a, b] = memoryTransportPair();
        const work: Promise<unknown>[] = [];
        const consume = (s: Stream) => {
          work.push(
            (async () => {
              while ((await s.read()) !== null) { /* discard */ }
              await s.write(new Uint8Array([1, 2, 3]));
              await s.closeWrite();
            })().catch((e) => e),
          );
        };
        const session = new Session(b, {
          role,
          initialWindow: 1024,
          onStream: (s) => {
            const answer = answers[s.id % answers.length];
            if (answer === "accept") s.accept();
            if (answer === "reject") s.reject(4);
            if (answer === "reset") s.reset("nope");
            consume(s);
          },
        });
        if (role === "client") {
          for (let i = 0; i < 3; i++) {
            work.push(session.openStream(new Uint8Array([0, i])).then(consume, (e) => e));
          }
          // Skip the client's PREFACE so the peer side sees plain frames.
          await a.read();
        }
        let fed = 0;
        for (const f of frames) {
          try {
            await a.write(encodeFrame(f));
            fed++;
          } catch {
            break; // the session closed the pipe
          }
        }
        // Let the session process what it got (bounded: a few event-loop turns).
        for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 0));
        session.close("test over");
        const reason = await session.closed;
        assert.ok(
          reason === "test over" || reason.startsWith("go away") ||
            reason.startsWith("protocol error: "),
          `unexpected end: ${reason} after ${fed} frames`,
        );
        await Promise.all(work);
        a.close();
      },
    ),
    { numRuns: 200 },
  );
});
