/** The one shutdown of a relay or proxy run (run.ts): its order, its grace period, idempotence. */

import assert from "node:assert/strict";
import type { AgentConnection } from "./connect.ts";
import { type LocalServer, runOf } from "./run.ts";

/** A connection whose tunnel and agents only record what is done to them. */
function fakeConnection(events: string[]): AgentConnection {
  return {
    tunnel: {
      goAway: () => events.push("tunnel go-away"),
      close: () => events.push("tunnel close"),
    },
    agents: {
      deleteAll: () => {
        events.push("agent deleted");
        return Promise.resolve();
      },
    },
    agent: () => ({}),
  } as unknown as AgentConnection;
}

function server(name: string, events: string[], active: { n: number }): LocalServer {
  return {
    stopAccepting: () => events.push(`${name} stops accepting`),
    get active() {
      return active.n;
    },
    close: () => {
      events.push(`${name} closed`);
    },
  };
}

Deno.test("shutdown: stop accepting, go-away, wait for open connections, close, release, delete the agent", async () => {
  const events: string[] = [];
  const active = { n: 1 };
  const run = runOf(
    fakeConnection(events),
    [server("a", events, active), server("b", events, { n: 0 })],
    () => events.push("released"),
  );
  const done = run.shutdown(5000);
  await new Promise((r) => setTimeout(r, 120));
  assert.deepEqual(events, ["a stops accepting", "b stops accepting", "tunnel go-away"]);
  active.n = 0;
  await done;
  assert.deepEqual(events.slice(3), [
    "tunnel close",
    "a closed",
    "b closed",
    "released",
    "agent deleted",
  ]);
  assert.equal(run.shutdown(), done, "a second shutdown is the first one");
});

Deno.test("shutdown: connections still open after the grace period are closed", async () => {
  const events: string[] = [];
  const t0 = Date.now();
  await runOf(fakeConnection(events), [server("a", events, { n: 3 })]).shutdown(100);
  assert.ok(Date.now() - t0 >= 100);
  assert.deepEqual(events, [
    "a stops accepting",
    "tunnel go-away",
    "tunnel close",
    "a closed",
    "agent deleted",
  ]);
});
