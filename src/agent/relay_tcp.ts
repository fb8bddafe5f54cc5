/**
 * Relays bytes between a client Endpoint and a TCP destination, both ways, with
 * half-close: EOF from one side becomes `closeWrite()` on the other, and the request
 * ends when both directions have ended (or either fails).
 *
 * A manual read/write loop is used on purpose: `pipeTo` loses half-close and is slower (see
 * NOTES.md). Destination reads go through a `DestinationReader`: a small probe buffer per
 * request, and reads no larger than the client side can take at once into buffers borrowed from
 * shared pools (src/agent/dest_reader.ts).
 *
 * @module
 */

import { DestinationReader } from "./dest_reader.ts";
import type { Endpoint } from "./endpoint.ts";
import { agentReadPools } from "./memory.ts";

/** Byte counts of a finished relay. */
export interface RelayResult {
  /** Bytes from the client to the destination. */
  sent: number;
  /** Bytes from the destination to the client. */
  received: number;
  /** Why it ended abnormally, if it did. */
  error?: string;
}

function describe(e: unknown): string {
  return e instanceof Error ? e.message || e.name : String(e);
}

/** Relays until both directions end. Always closes `dest` and ends `client`. */
export async function relayTcp(client: Endpoint, dest: Deno.TcpConn): Promise<RelayResult> {
  const result: RelayResult = { sent: 0, received: 0 };
  let failed = false;
  const fail = (where: string, e: unknown) => {
    if (failed) return;
    failed = true;
    result.error = `${where}: ${describe(e)}`;
    client.abort(result.error);
    try {
      dest.close();
    } catch {
      // already closed
    }
  };

  const up = async () => {
    try {
      while (true) {
        const chunk = await client.read();
        if (chunk === null) break;
        let off = 0;
        while (off < chunk.length) off += await dest.write(chunk.subarray(off));
        result.sent += chunk.length;
      }
      await dest.closeWrite();
    } catch (e) {
      fail("client→destination", e);
    }
  };

  const down = async () => {
    const reader = new DestinationReader(dest, agentReadPools);
    const writable = () => client.writable();
    try {
      while (true) {
        const chunk = await reader.read(writable);
        if (chunk === null) break;
        await client.write(chunk);
        result.received += chunk.length;
      }
      await client.closeWrite();
    } catch (e) {
      fail("destination→client", e);
    } finally {
      reader.release();
    }
  };

  await Promise.all([up(), down()]);
  if (!failed) {
    client.close();
    try {
      dest.close();
    } catch {
      // already closed
    }
  }
  return result;
}
