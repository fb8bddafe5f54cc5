/**
 * The session's receive budget (SessionOptions.receiveBudget, PROTOCOL.md §5.6): what the windows
 * on the wire promise the peer, checked with a scripted peer that sends all the credit it gets.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import type { Frame } from "../protocol/mux.ts";
import { MIN_STREAM_WINDOW } from "./options.ts";
import type { Stream } from "./stream.ts";
import { rawPeer, TEST_HEADER as HEADER } from "../../tests/_lib/session.ts";

const KiB = 1024;
const M = MIN_STREAM_WINDOW;

/** The window an OPEN frame announced. */
function openWindow(f: Frame): number {
  assert.equal(f.type, "open");
  return f.type === "open" ? f.window : 0;
}

/** Reads exactly `n` bytes from `s`. */
async function readN(s: Stream, n: number): Promise<void> {
  let got = 0;
  while (got < n) {
    const c = await s.read();
    assert.ok(c, "stream ended early");
    got += c.length;
  }
  assert.equal(got, n);
}

Deno.test("budget: new streams get what is left of the budget, at least MIN_STREAM_WINDOW", async () => {
  const peer = await rawPeer({ receiveBudget: 4 * M, initialWindow: 2 * M });
  const streams = [0, 1, 2, 3].map(() => peer.client.openEarlyStream(HEADER));
  const windows = [];
  for (let i = 0; i < 4; i++) windows.push(openWindow(await peer.next("open")));
  assert.deepEqual(windows, [2 * M, 2 * M, M, M]);
  assert.equal(peer.client.receiveWindows, 6 * M);
  // A finished stream's window goes back to the budget; the next stream gets it.
  streams[0].reset("done");
  await peer.next("reset");
  assert.equal(peer.client.receiveWindows, 4 * M);
  peer.client.openEarlyStream(HEADER);
  assert.equal(openWindow(await peer.next("open")), M);
  await peer.done();
});

Deno.test("budget: a stream above its fair share gives back less than it read", async () => {
  const peer = await rawPeer({ receiveBudget: 4 * M, initialWindow: 4 * M });
  const a = peer.client.openEarlyStream(HEADER);
  assert.equal(openWindow(await peer.next("open")), 4 * M);
  await peer.send({ type: "status", streamId: 1, status: 0, window: 64 * KiB });
  await a.opened;
  // Three more streams open; the budget is spent, so they get the floor, and A's fair share
  // is now 4 M / 4 = M.
  for (let i = 0; i < 3; i++) {
    peer.client.openEarlyStream(HEADER);
    assert.equal(openWindow(await peer.next("open")), M);
  }
  for (let i = 0; i < 4; i++) {
    await peer.send({ type: "data", streamId: 1, data: new Uint8Array(M) });
  }
  await readN(a, 4 * M);
  const update = await peer.next("window_update");
  assert.deepEqual(update, { type: "window_update", streamId: 1, increment: M });
  assert.equal(a.receiveWindow, M);
  assert.equal(peer.client.receiveWindows, 4 * M);
  // It keeps going at its fair share: what it read comes back as credit, no more, no less.
  await peer.send({ type: "data", streamId: 1, data: new Uint8Array(M) });
  await readN(a, M);
  let returned = 0;
  while (returned < M) {
    const u = await peer.next("window_update");
    assert.equal(u.type === "window_update" && u.streamId, 1);
    returned += u.type === "window_update" ? u.increment : 0;
  }
  assert.equal(returned, M);
  assert.equal(a.receiveWindow, M);
  await peer.done();
});

Deno.test("budget: whatever the peer sends, its credit stays within budget + streams × floor", async () => {
  // A peer that sends everything it may (never more) while streams open, get read and end: the
  // credit the client has granted and not yet received never exceeds the bound.
  const action = fc.oneof(
    fc.constant({ kind: "open" as const }),
    fc.record({
      kind: fc.constant("send" as const),
      pick: fc.nat(),
      share: fc.integer({ min: 1, max: 4 }),
    }),
    fc.record({ kind: fc.constant("read" as const), pick: fc.nat() }),
    fc.record({ kind: fc.constant("reset" as const), pick: fc.nat() }),
  );
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 1, max: 8 }).map((n) => n * M),
      fc.integer({ min: 1, max: 8 }).map((n) => n * 8 * KiB),
      fc.array(action, { minLength: 1, maxLength: 40 }),
      async (budget, initialWindow, actions) => {
        const peer = await rawPeer({ receiveBudget: budget, initialWindow });
        try {
          /** Per open stream: its Stream, the peer's credit, and bytes sent but not yet read. */
          const open = new Map<number, { s: Stream; credit: number; unread: number }>();
          const pick = (n: number) => [...open.keys()][n % open.size];
          let nextId = 1;
          for (const a of actions) {
            if (a.kind === "open") {
              const s = peer.client.openEarlyStream(HEADER);
              const w = openWindow(await peer.next("open"));
              await peer.send({ type: "status", streamId: nextId, status: 0, window: 16 * KiB });
              await s.opened;
              open.set(nextId, { s, credit: w, unread: 0 });
              nextId += 2;
            } else if (open.size === 0) {
              continue;
            } else if (a.kind === "send") {
              const id = pick(a.pick);
              const st = open.get(id)!;
              const n = Math.ceil(st.credit / a.share);
              if (n === 0) continue;
              await peer.send({ type: "data", streamId: id, data: new Uint8Array(n) });
              st.credit -= n;
              st.unread += n;
            } else if (a.kind === "read") {
              const st = open.get(pick(a.pick))!;
              if (st.unread === 0) continue;
              await readN(st.s, st.unread);
              st.unread = 0;
            } else {
              const id = pick(a.pick);
              open.get(id)!.s.reset("test");
              open.delete(id);
            }
            // Let the client's frames arrive, then check the bound.
            for (const f of await peer.takeAll()) {
              if (f.type === "window_update") {
                const st = open.get(f.streamId);
                if (st) st.credit += f.increment;
              }
            }
            const owed = [...open.values()].reduce((t, st) => t + st.credit + st.unread, 0);
            assert.ok(
              owed <= budget + open.size * MIN_STREAM_WINDOW,
              `the peer may still send ${owed} bytes (${open.size} streams, budget ${budget})`,
            );
            const windows = [...open.values()].reduce((t, st) => t + st.s.receiveWindow, 0);
            assert.equal(peer.client.receiveWindows, windows);
            assert.ok(owed <= windows);
          }
        } finally {
          await peer.done();
        }
      },
    ),
    { numRuns: 60 },
  );
});
