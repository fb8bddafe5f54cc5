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
 * An agent holds one relay per open connection, mostly idle, so a relay is one object and its
 * two loops, with no closures or promise combinators beside them: each would cost every open
 * connection its size (`deno task bench:local --phases idle` measures the total per connection).
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
export function relayTcp(client: Endpoint, dest: Deno.TcpConn): Promise<RelayResult> {
  return new TcpRelay(client, dest).done;
}

/** One relay: the two directions, and what ends it. */
class TcpRelay {
  readonly done: Promise<RelayResult>;
  #result: RelayResult = { sent: 0, received: 0 };
  #client: Endpoint;
  #dest: Deno.TcpConn;
  #reader: DestinationReader;
  #failed = false;
  /** Directions still running. */
  #running = 2;
  #resolve: (result: RelayResult) => void;

  constructor(client: Endpoint, dest: Deno.TcpConn) {
    this.#client = client;
    this.#dest = dest;
    this.#reader = new DestinationReader(dest, agentReadPools);
    const { promise, resolve } = Promise.withResolvers<RelayResult>();
    this.done = promise;
    this.#resolve = resolve;
    this.#up();
    this.#down();
  }

  /** Client → destination, until the client half-closes. Never rejects. */
  async #up(): Promise<void> {
    try {
      while (true) {
        const chunk = await this.#client.read();
        if (chunk === null) break;
        let off = 0;
        while (off < chunk.length) off += await this.#dest.write(chunk.subarray(off));
        this.#result.sent += chunk.length;
      }
      await this.#dest.closeWrite();
    } catch (e) {
      this.#fail("client→destination", e);
    }
    this.#ended();
  }

  /** Destination → client, until the destination's EOF. Never rejects. */
  async #down(): Promise<void> {
    try {
      while (true) {
        const chunk = await this.#reader.read(this.#client);
        if (chunk === null) break;
        await this.#client.write(chunk);
        this.#result.received += chunk.length;
      }
      await this.#client.closeWrite();
    } catch (e) {
      this.#fail("destination→client", e);
    }
    this.#reader.release();
    this.#ended();
  }

  #fail(where: string, e: unknown): void {
    if (this.#failed) return;
    this.#failed = true;
    this.#result.error = `${where}: ${describe(e)}`;
    this.#client.abort(this.#result.error);
    this.#closeDest();
  }

  /** One direction ended; after both, the request ends. */
  #ended(): void {
    if (--this.#running > 0) return;
    if (!this.#failed) {
      this.#client.close();
      this.#closeDest();
    }
    this.#resolve(this.#result);
  }

  #closeDest(): void {
    try {
      this.#dest.close();
    } catch {
      // already closed
    }
  }
}
