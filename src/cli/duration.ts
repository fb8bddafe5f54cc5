import { UsageError } from "../errors.ts";
import { parseDuration as parseDurationText } from "../protocol/duration.ts";

/**
 * Parses a duration flag's value (protocol/duration.ts: `500ms`, `1m30s`, a bare integer means
 * seconds) into milliseconds; invalid text is a UsageError worded as kubectl words it.
 */
export function parseDuration(text: string, flag: string): number {
  const ms = parseDurationText(text);
  if (ms === undefined) {
    throw new UsageError(`invalid argument "${text}" for "${flag}" flag: invalid duration`);
  }
  return ms;
}
