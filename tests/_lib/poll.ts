/** Polling for a condition in tests, bounded in time. */

import { sleep } from "./net.ts";

/**
 * Calls `f` every 200 ms until it returns a value other than null, and returns that value. An
 * error thrown by `f` counts as "not yet" (the last one is quoted if time runs out). Throws
 * `timed out waiting for WHAT` after `timeoutMs`.
 */
export async function poll<T>(
  what: string,
  timeoutMs: number,
  f: () => Promise<T | null>,
): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < end) {
    try {
      const v = await f();
      if (v !== null) return v;
    } catch (e) {
      last = String(e);
    }
    await sleep(200);
  }
  throw new Error(`timed out waiting for ${what} ${last}`);
}
