/**
 * What one relay or proxy run needs from the command line, and where it writes.
 *
 * @module
 */

import type { AgentPatch } from "../kube/agent_patch.ts";
import type { KubeFlags } from "../kube/flags.ts";

/** Output sinks (injected so tests and the demo can capture them). */
export interface Io {
  out: (line: string) => void;
  err: (line: string) => void;
}

/** The settings of one run (the CLI builds them from its flags). */
export interface ClientOptions {
  /** How to reach the apiserver. */
  kube: KubeFlags;
  /** `-v`: debug lines up to this level go to stderr. */
  verbosity: number;
  /** Where the agent Job is created: `--server.namespace` or the patch's metadata.namespace. */
  agentNamespace: string;
  /** `--server.image`; default DEFAULT_AGENT_IMAGE. */
  agentImage?: string;
  /** `--patch` / `--patch-file`, parsed: a merge patch of the agent's Pod. */
  agentPatch?: AgentPatch;
  /** `--direct`: no agent; each connection is a port-forward to the target pod itself. */
  direct?: boolean;
  /** `--pod-running-timeout`. */
  podRunningTimeoutMs: number;
  /** `--heartbeat-timeout`. */
  heartbeatTimeoutMs: number;
  /** `--reuse-agent`: use a live shared agent of the same user and template; leave ours shared. */
  reuseAgent?: boolean;
}

/** A leveled debug log line sink (`-v N` shows levels ≤ N). */
export type Log = (level: number, line: string) => void;

/** Debug lines kubectl-style (`I12:34:56.789 …`) on stderr, up to the `-v` level. */
export function logger(verbosity: number, io: Io): Log {
  return (level, line) => {
    if (verbosity >= level) io.err(`I${new Date().toISOString().slice(11, 23)} ${line}`);
  };
}
