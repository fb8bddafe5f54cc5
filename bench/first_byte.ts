/**
 * Time to first byte: wall time from spawning a forwarding command to the first echoed byte on a
 * new local connection, with the relay's startup phases from its `-v=1` `startup:` lines.
 */

/** A forwarding command that has printed its local port. */
export interface StartedForward {
  /** The local port from its `Forwarding from` line. */
  port: number;
  /** Its stderr lines so far (read after the first byte). */
  stderr: () => string[];
  /** Stops the command and waits for it to exit. */
  stop: () => Promise<void>;
}

/** One run: total milliseconds and, for the relay, the milliseconds of each phase. */
export interface FirstByteRun {
  totalMs: number;
  phases?: Record<string, number>;
}

/**
 * The relay's `startup:` milestones in order, and the phase that ends at each (the phase between
 * the previous milestone, or the spawn, and this one).
 */
const MILESTONES: [RegExp, string][] = [
  [/^startup: started$/, "process start"],
  [/^startup: credentials loaded$/, "credentials"],
  [/^startup: targets resolved$/, "target resolved"],
  [/^startup: access checked$/, "access check"],
  [/^startup: agent Job \S+ created$/, "Job created"],
  [/^startup: agent pod \S+ ready$/, "pod running"],
  [/^startup: tunnel up$/, "tunnel up"],
];

/** The phase names of a relay breakdown, in order (the last one ends at the first byte). */
export const RELAY_PHASES = [...MILESTONES.map(([, name]) => name), "first byte"];

/**
 * Epoch milliseconds of a `-v` log line (`I12:34:56.789 …`, UTC time of day), taking the date
 * from `near` (an epoch time within 12 hours of the line).
 */
function lineTime(line: string, near: number): number | undefined {
  const m = /^I(\d\d):(\d\d):(\d\d)\.(\d{3}) /.exec(line);
  if (!m) return undefined;
  const day = Math.floor(near / 86_400_000) * 86_400_000;
  let t = day + ((Number(m[1]) * 60 + Number(m[2])) * 60 + Number(m[3])) * 1000 + Number(m[4]);
  if (t < near - 43_200_000) t += 86_400_000;
  if (t > near + 43_200_000) t -= 86_400_000;
  return t;
}

/** Phase durations (ms) from the relay's `-v=1` lines; undefined if a milestone is missing. */
export function relayPhases(
  stderr: string[],
  spawnedAt: number,
  firstByteAt: number,
): Record<string, number> | undefined {
  const phases: Record<string, number> = {};
  let prev = spawnedAt;
  for (const [re, name] of MILESTONES) {
    const line = stderr.find((l) => re.test(l.replace(/^I\S+ /, "")));
    const t = line === undefined ? undefined : lineTime(line, spawnedAt);
    if (t === undefined) return undefined;
    phases[name] = t - prev;
    prev = t;
  }
  phases["first byte"] = firstByteAt - prev;
  return phases;
}

/**
 * Spawns a forward with `start` (which resolves once it printed its port), connects to that port,
 * sends one byte and waits for its echo; stops the forward. `phases` turns the stderr lines into a
 * breakdown (given the spawn and first-byte epoch times).
 */
export async function firstByte(
  start: () => Promise<StartedForward>,
  phases?: typeof relayPhases,
): Promise<FirstByteRun> {
  const spawnedAt = Date.now();
  const t0 = performance.now();
  const fwd = await start();
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: fwd.port });
    try {
      conn.setNoDelay(true);
      const timer = setTimeout(() => conn.close(), 30_000);
      await conn.write(new Uint8Array([42]));
      const buf = new Uint8Array(1);
      const n = await conn.read(buf).finally(() => clearTimeout(timer));
      if (n !== 1 || buf[0] !== 42) throw new Error("first byte: 1-byte echo failed");
    } finally {
      try {
        conn.close();
      } catch {
        // closed by the timer
      }
    }
    const totalMs = performance.now() - t0;
    return {
      totalMs,
      phases: phases?.(fwd.stderr(), spawnedAt, spawnedAt + totalMs),
    };
  } finally {
    await fwd.stop();
  }
}

/** The median of some numbers (NaN if none). */
export function median(xs: number[]): number {
  const s = xs.slice().sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}
