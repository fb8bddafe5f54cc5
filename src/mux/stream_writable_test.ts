/**
 * Stream.writable(): how many bytes a write takes now, waiting for credit when there is none,
 * and failing like write() once the stream is gone. Checked against a scripted peer.
 */

import assert from "node:assert/strict";
import { EARLY_WINDOW } from "../protocol/mux.ts";
import { StreamResetError } from "./errors.ts";
import { STREAM_HIGH_WATER } from "./options.ts";
import { rawPeer, TEST_HEADER as HEADER } from "../../tests/_lib/session.ts";

const KiB = 1024;

/** A scripted peer and a client stream it accepted with a `window`-byte receive window. */
async function acceptedStream(window: number) {
  const peer = await rawPeer();
  const s = peer.client.openEarlyStream(HEADER);
  await peer.next("open");
  await peer.send({ type: "status", streamId: 1, status: 0, window });
  await s.opened;
  return { peer, s };
}

/** Whether `p` has settled after the pending I/O and timers of one turn. */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  p.then(() => (done = true), () => (done = true));
  await new Promise((resolve) => setTimeout(resolve, 10));
  return done;
}

Deno.test("writable: the peer's credit, then nothing until a WINDOW_UPDATE", async () => {
  const peer = await rawPeer();
  const s = peer.client.openEarlyStream(HEADER);
  await peer.next("open");
  // Before STATUS: the early-data credit.
  assert.equal(await s.writable(), EARLY_WINDOW);
  await peer.send({ type: "status", streamId: 1, status: 0, window: 40 * KiB });
  await s.opened;
  assert.equal(await s.writable(), 40 * KiB);
  await s.write(new Uint8Array(40 * KiB));
  const waiting = s.writable();
  assert.equal(await settled(waiting), false, "no credit left: writable() waits");
  await peer.send({ type: "window_update", streamId: 1, increment: 3000 });
  assert.equal(await waiting, 3000);
  await peer.done();
});

Deno.test("writable: never more than the frame writer's room for the stream", async () => {
  const { peer, s } = await acceptedStream(4096 * KiB);
  const room = await s.writable();
  assert.ok(room > 0 && room <= STREAM_HIGH_WATER, `room ${room}`);
  await peer.done();
});

Deno.test("writable: rejects like write() once the stream is reset", async () => {
  const { peer, s } = await acceptedStream(16 * KiB);
  await s.write(new Uint8Array(16 * KiB));
  const waiting = s.writable();
  await peer.send({ type: "reset", streamId: 1, reason: "gone" });
  await assert.rejects(waiting, StreamResetError);
  await assert.rejects(s.writable(), StreamResetError);
  await peer.done();
});
