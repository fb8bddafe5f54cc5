/** Resident set size of a process now, in MiB (undefined if it is gone). */
export function rssMiB(pid: number | undefined): number | undefined {
  if (!pid) return undefined;
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
    return m ? Number(m[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Samples the resident set size of some processes every 100 ms and keeps the peak (MiB). */
export class PeakRss {
  #peak = 0;
  #timer: ReturnType<typeof setInterval>;

  constructor(pids: () => number[]) {
    const sample = () => {
      const total = pids().reduce((sum, pid) => sum + (rssMiB(pid) ?? 0), 0);
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
