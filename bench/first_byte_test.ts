import assert from "node:assert/strict";
import { median, RELAY_PHASES, relayPhases } from "./first_byte.ts";

const spawned = Date.UTC(2026, 10, 25, 23, 59, 59, 900);

Deno.test("relayPhases: phases between the -v=1 startup lines, across midnight", () => {
  const stderr = [
    "I23:59:59.950 startup: started",
    "Starting agent in namespace default…",
    "I00:00:00.010 startup: credentials loaded",
    "I00:00:00.030 startup: targets resolved",
    "I00:00:00.040 startup: access checked",
    "I00:00:00.055 startup: agent Job kubectl-relay-abc created",
    "Agent kubectl-relay-abc (pod kubectl-relay-abc-x) ready in 0.3s",
    "I00:00:00.355 startup: agent pod kubectl-relay-abc-x ready",
    "I00:00:00.400 startup: tunnel up",
  ];
  const phases = relayPhases(stderr, spawned, spawned + 520);
  assert.deepEqual(phases, {
    "process start": 50,
    "credentials": 60,
    "target resolved": 20,
    "access check": 10,
    "Job created": 15,
    "pod running": 300,
    "tunnel up": 45,
    "first byte": 20,
  });
  assert.deepEqual(Object.keys(phases!), RELAY_PHASES);
});

Deno.test("relayPhases: undefined when a milestone is missing (relay without -v)", () => {
  assert.equal(relayPhases(["I23:59:59.950 startup: started"], spawned, spawned + 1), undefined);
});

Deno.test("median: odd and even counts", () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.ok(Number.isNaN(median([])));
});
