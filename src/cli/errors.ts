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
