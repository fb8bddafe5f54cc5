/** Why an agent pod ended, as the user reads it: OOM kills name the limit, else the last log line. */

import assert from "node:assert/strict";
import { describeAgentEnd, lastLogLine } from "../../src/kube/agent_end.ts";
import type { Pod } from "../../src/kube/types.ts";

function pod(
  phase: string,
  terminated?: { reason?: string; exitCode?: number },
  memory?: string,
): Pod {
  return {
    metadata: { name: "kubectl-relay-agent-x-abcde", namespace: "default" },
    spec: {
      containers: [{ name: "agent", resources: memory ? { limits: { memory } } : undefined }],
    },
    status: { phase, containerStatuses: [{ name: "agent", state: { terminated } }] },
  };
}

Deno.test("lastLogLine: the last error line wins, prefixes dropped; else the last non-stack line", () => {
  assert.equal(
    lastLogLine("error: cannot listen on 127.0.0.1:9527 (tunnel): Address already in use\n"),
    "cannot listen on 127.0.0.1:9527 (tunnel): Address already in use",
  );
  assert.equal(
    lastLogLine(
      [
        "2026-01-01T00:00:00.000Z - session 1.2.3.4:5: open",
        "error: Uncaught (in promise) TypeError: boom",
        "    at foo (file:///agent.ts:1:1)",
        "    at bar (file:///agent.ts:2:2)",
        "",
      ].join("\n"),
    ),
    "Uncaught (in promise) TypeError: boom",
  );
  assert.equal(
    lastLogLine(
      "2026-01-01T00:00:00.000Z - agent stopping: idle\n2026-01-01T00:00:00.001Z - exiting: idle\n",
    ),
    "exiting: idle",
  );
  assert.equal(lastLogLine(""), undefined);
  assert.equal(lastLogLine("\n \n"), undefined);
});

Deno.test("describeAgentEnd: OOMKilled names the memory limit; failures quote the log", () => {
  assert.equal(
    describeAgentEnd(pod("Failed", { reason: "OOMKilled", exitCode: 137 }, "48Mi")),
    "agent pod kubectl-relay-agent-x-abcde was OOMKilled (exit code 137): it used more than its memory limit of 48Mi",
  );
  assert.equal(
    describeAgentEnd(
      pod("Failed", { reason: "Error", exitCode: 1 }, "128Mi"),
      "cannot listen on 127.0.0.1:9527 (tunnel): Address already in use (os error 98)",
    ),
    "agent pod kubectl-relay-agent-x-abcde failed (exit code 1): cannot listen on 127.0.0.1:9527 (tunnel): Address already in use (os error 98)",
  );
  assert.equal(
    describeAgentEnd(pod("Succeeded", { reason: "Completed", exitCode: 0 }), "exiting: idle"),
    "agent pod kubectl-relay-agent-x-abcde ended (Succeeded): exiting: idle",
  );
  assert.equal(
    describeAgentEnd(pod("Failed", { exitCode: 2 }), undefined, "Error from server (Forbidden)"),
    "agent pod kubectl-relay-agent-x-abcde failed (exit code 2); its log could not be read: Error from server (Forbidden)",
  );
  assert.equal(describeAgentEnd(pod("Failed")), "agent pod kubectl-relay-agent-x-abcde failed");
});
