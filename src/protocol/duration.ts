/**
 * Durations as the command lines of the client and the agent write them.
 *
 * @module
 */

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * Parses a Go-style duration into milliseconds (rounded): a sequence of decimal numbers with a
 * unit each (`500ms`, `1.5s`, `1m30s`, `2h`), or a bare integer, which means seconds (`30`, `0`),
 * as kubectl's `--request-timeout` reads it. A bare fraction (`1.5`) has no unit and is invalid,
 * as in kubectl. Returns undefined for invalid text.
 */
export function parseDuration(text: string): number | undefined {
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/y;
  let total = 0;
  while (re.lastIndex < text.length) {
    const m = re.exec(text);
    if (m === null) return undefined;
    total += Number(m[1]) * UNITS[m[2]];
  }
  return text === "" ? undefined : Math.round(total);
}
