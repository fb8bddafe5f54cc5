/**
 * A field of `/proc/<pid>/status` that measures resident memory: `VmRSS` (all of it), `RssAnon`
 * (the process's own allocations) or `RssFile` (mapped files: binaries and libraries).
 */
export type RssField = "VmRSS" | "RssAnon" | "RssFile";

/** Resident memory of a process now, in MiB (undefined if it is gone). `field`: see RssField. */
export function rssMiB(pid: number | undefined, field: RssField = "VmRSS"): number | undefined {
  if (!pid) return undefined;
  try {
    const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(
      Deno.readTextFileSync(`/proc/${pid}/status`),
    );
    return m ? Number(m[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Samples the resident memory of some processes every 100 ms and keeps the peak (MiB). */
export class PeakRss {
  #peak = 0;
  #timer: ReturnType<typeof setInterval>;

  constructor(pids: () => number[], field: RssField = "VmRSS") {
    const sample = () => {
      const total = pids().reduce((sum, pid) => sum + (rssMiB(pid, field) ?? 0), 0);
      this.#peak = Math.max(this.#peak, total);
    };
    sample();
    this.#timer = setInterval(sample, 100);
  }

  /** Stops sampling; returns the peak in MiB (0 if nothing was sampled). */
  stop(): number {
    clearInterval(this.#timer);
    return this.#peak;
  }
}
