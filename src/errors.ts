/**
 * Errors shared by every layer of the client.
 *
 * @module
 */

/**
 * An error caused by the user (bad flag, bad target, missing object…).
 * `main.ts` prints it as `error: <message>` without a stack trace and exits 1.
 */
export class UsageError extends Error {
  /** Print the short usage hint after the message (as kubectl does for argument errors). */
  readonly showHint: boolean;
  constructor(message: string, showHint = false) {
    super(message);
    this.name = "UsageError";
    this.showHint = showHint;
  }
}

/** Best-effort message of an unknown error. */
export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
