/** Binding a run's local ports before anything is created in the cluster (relay.ts). */

import assert from "node:assert/strict";
import { UsageError } from "../errors.ts";
import { parsePortSpec } from "../spec/ports.ts";
import type { ForwardRequest } from "../spec/request.ts";
import { parseTarget } from "../spec/target.ts";
import { bindAll } from "./relay.ts";

function request(addresses: string[], ...ports: string[]): ForwardRequest {
  return { target: parseTarget("pod/web"), ports: ports.map(parsePortSpec), addresses };
}

Deno.test("bindAll: one socket per port and address; a random port is the same on every address", () => {
  const bound = bindAll([request(["127.0.0.1", "127.0.0.2"], ":80", ":53@udp")]);
  try {
    assert.deepEqual(
      bound.map((b) => [b.socket.address, b.socket.protocol, b.spec.text]),
      [
        ["127.0.0.1", "tcp", ":80"],
        ["127.0.0.2", "tcp", ":80"],
        ["127.0.0.1", "udp", ":53@udp"],
        ["127.0.0.2", "udp", ":53@udp"],
      ],
    );
    assert.equal(bound[0].socket.port, bound[1].socket.port);
    assert.equal(bound[2].socket.port, bound[3].socket.port);
    assert.ok(bound[0].socket.port > 0 && bound[2].socket.port > 0);
  } finally {
    bound.forEach((b) => b.socket.close());
  }
});

Deno.test("bindAll: a port in use is a user error naming it, and nothing stays bound", () => {
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (taken.addr as Deno.NetAddr).port;
  const free = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const freePort = (free.addr as Deno.NetAddr).port;
  free.close();
  try {
    assert.throws(
      () => bindAll([request(["127.0.0.1"], `${freePort}:80`, `${port}:81`)]),
      (e: unknown) => {
        assert.ok(e instanceof UsageError);
        assert.equal(
          e.message,
          `unable to listen on 127.0.0.1:${port} (tcp): address already in use`,
        );
        return true;
      },
    );
    // The first socket was released again.
    Deno.listen({ hostname: "127.0.0.1", port: freePort }).close();
  } finally {
    taken.close();
  }
});
