/** A process as Linux shows it in /proc. */

/** The fields of `/proc/PID/status` (`Uid`, `CapEff`, `NoNewPrivs`, …), values trimmed. */
export function procStatus(pid: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of Deno.readTextFileSync(`/proc/${pid}/status`).split("\n")) {
    const i = line.indexOf(":");
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  return out;
}
