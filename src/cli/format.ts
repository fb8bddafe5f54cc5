/**
 * How the CLI prints: kubectl-style lines on stdout and stderr, errors without stack traces.
 *
 * @module
 */

import type { Io } from "../client/options.ts";
import { UsageError } from "../errors.ts";
import { KubeApiError, KubeConnectionError } from "../kube/client.ts";

/** Console output, kubectl-style: data lines on stdout, progress and errors on stderr. */
export const consoleIo: Io = {
  out: (line) => console.log(line),
  err: (line) => console.error(line),
};

/** Formats any error the way kubectl would print it (no stack traces for expected failures). */
export function formatError(e: unknown): string {
  if (e instanceof KubeApiError) return e.display;
  if (e instanceof KubeConnectionError || e instanceof UsageError) return `error: ${e.message}`;
  return `error: ${(e as Error)?.message ?? String(e)}`;
}
