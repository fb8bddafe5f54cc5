/** fast-check arbitraries for mux frames (shared by the mux and session property tests). */

import fc from "fast-check";
import { type Frame, MAX_WINDOW } from "../../src/protocol/mux.ts";

/** Stream ids in the full valid range. */
export const arbStreamId: fc.Arbitrary<number> = fc.integer({ min: 1, max: 0xffff_ffff });
const streamId = arbStreamId;
const window = fc.integer({ min: 0, max: MAX_WINDOW });
const reason = fc.string({ unit: "grapheme", maxLength: 40 });

/** Any valid frame (small payloads). */
export const arbFrame: fc.Arbitrary<Frame> = fc.oneof(
  fc.record({
    type: fc.constant("open" as const),
    streamId,
    window,
    header: fc.uint8Array({ minLength: 1, maxLength: 300 }),
  }),
  fc.record({
    type: fc.constant("status" as const),
    streamId,
    status: fc.integer({ min: 0, max: 255 }),
    window,
  }),
  fc.record({
    type: fc.constant("data" as const),
    streamId,
    data: fc.uint8Array({ maxLength: 2000 }),
  }),
  fc.record({
    type: fc.constant("window_update" as const),
    streamId,
    increment: fc.integer({ min: 1, max: MAX_WINDOW }),
  }),
  fc.record({ type: fc.constant("half_close" as const), streamId }),
  fc.record({ type: fc.constant("reset" as const), streamId, reason }),
  fc.record({
    type: fc.constant("ping" as const),
    data: fc.uint8Array({ minLength: 8, maxLength: 8 }),
  }),
  fc.record({
    type: fc.constant("pong" as const),
    data: fc.uint8Array({ minLength: 8, maxLength: 8 }),
  }),
  fc.record({ type: fc.constant("go_away" as const), reason }),
).map((f) => ({ ...f }) as Frame); // fc.record objects have a null prototype
