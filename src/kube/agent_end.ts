/**
 * Why an agent pod ended, in one line for the user: from the agent container's terminated state
 * (an OOM kill names the memory limit) and otherwise the agent's last log line. Pure functions.
 *
 * @module
 */

import type { Pod } from "./types.ts";

/** The agent's container name in manifests/agent-job.yaml. */
export const AGENT_CONTAINER = "agent";

/** How many log lines the client asks for (`tailLines`) to find the agent's last word. */
export const LOG_TAIL_LINES = 20;

/** Whether the pod has ended (its containers will not run again: restartPolicy Never). */
export function podEnded(pod: Pod): boolean {
  return pod.status?.phase === "Failed" || pod.status?.phase === "Succeeded";
}

/** The agent container's terminated state, if it has one. */
export function agentTermination(
  pod: Pod,
): { reason?: string; exitCode?: number; message?: string } | undefined {
  const statuses = pod.status?.containerStatuses ?? [];
  const s = statuses.find((c) => c.name === AGENT_CONTAINER) ?? statuses[0];
  return s?.state?.terminated;
}

/** True if the kernel killed the agent for exceeding its memory limit (as the kubelet reports). */
export function wasOOMKilled(pod: Pod): boolean {
  return agentTermination(pod)?.reason === "OOMKilled";
}

/** The agent container's memory limit as written in the pod spec (e.g. `128Mi`), if any. */
export function agentMemoryLimit(pod: Pod): string | undefined {
  const containers = pod.spec?.containers ?? [];
  const c = containers.find((c) => c.name === AGENT_CONTAINER) ?? containers[0];
  return c?.resources?.limits?.memory;
}

/**
 * The line of an agent log that says best why it ended: the last `error: …` line if there is
 * one (a failed start, a crash), else the last line that is not a stack frame. The agent's
 * `<time> <request id>` prefix and an `error: ` prefix are dropped. Undefined for an empty log.
 */
export function lastLogLine(log: string): string | undefined {
  const lines = log.split("\n")
    .map((l) => l.replace(/^\d{4}-\d\d-\d\dT[\d:.]+Z \S+ /, "").trimEnd())
    .filter((l) => l.trim() !== "");
  const error = lines.findLast((l) => /^error: /i.test(l));
  const line = error ?? lines.findLast((l) => !/^\s+at /.test(l));
  return line?.replace(/^error: /i, "").trim();
}

/**
 * One line saying why the agent pod ended (lowercase start, no trailing period):
 * `agent pod P was OOMKilled: …memory limit of 128Mi…`, `agent pod P failed: <last log line>`,
 * or `agent pod P ended (Succeeded): <last log line>`; `logLine` is the agent's
 * {@link lastLogLine}, `logProblem` why it could not be read.
 */
export function describeAgentEnd(pod: Pod, logLine?: string, logProblem?: string): string {
  const name = `agent pod ${pod.metadata.name}`;
  const term = agentTermination(pod);
  if (wasOOMKilled(pod)) {
    const limit = agentMemoryLimit(pod);
    return `${name} was OOMKilled (exit code ${term?.exitCode ?? 137}): it used more than ${
      limit ? `its memory limit of ${limit}` : "the memory it may use"
    }`;
  }
  const how = pod.status?.phase === "Succeeded"
    ? "ended (Succeeded)"
    : `failed${term?.exitCode !== undefined ? ` (exit code ${term.exitCode})` : ""}`;
  if (logLine) return `${name} ${how}: ${logLine}`;
  if (logProblem) return `${name} ${how}; its log could not be read: ${logProblem}`;
  return `${name} ${how}`;
}
