/**
 * Agent logging: one line per event, `<ISO time> <request id or -> <message>`, on stderr
 * (stdout carries only the `listening on HOST:PORT` readiness line).
 *
 * @module
 */

/** A leveled line logger. */
export interface AgentLogger {
  /** Logs `message` for request `id` when the verbosity is at least `level`. */
  log(level: number, id: string, message: string): void;
}

/** Logger writing to stderr at verbosity `verbosity`. */
export function stderrLogger(verbosity: number): AgentLogger {
  const enc = new TextEncoder();
  return {
    log(level, id, message) {
      if (level > verbosity) return;
      const line = `${new Date().toISOString()} ${id} ${message.replaceAll("\n", " ")}\n`;
      try {
        Deno.stderr.writeSync(enc.encode(line));
      } catch {
        // stderr gone: nothing sensible to do
      }
    },
  };
}
