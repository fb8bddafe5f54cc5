/** A scripted socket for tests of relay readers (Deno's `read(p)` contract, no I/O). */

import type { ByteSource } from "../../src/mux/buffers.ts";

/**
 * A source that has `data` to give and hands out at most `limits[i]` bytes on read i (cycling),
 * then EOF. `sizes` records the size of every buffer it was asked to fill.
 */
export function scriptedSource(
  data: Uint8Array,
  limits: number[],
): ByteSource & { sizes: number[] } {
  let off = 0;
  let i = 0;
  const sizes: number[] = [];
  return {
    sizes,
    read(p: Uint8Array): Promise<number | null> {
      sizes.push(p.length);
      if (off >= data.length) return Promise.resolve(null);
      const n = Math.min(p.length, data.length - off, limits[i++ % limits.length]);
      p.set(data.subarray(off, off + n));
      off += n;
      return Promise.resolve(n);
    },
  };
}
