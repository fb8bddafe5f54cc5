/** Samples the resident set size of some processes every 100 ms and keeps the peak (MiB). */
export class PeakRss {
  #peak = 0;
  #timer: ReturnType<typeof setInterval>;

  constructor(pids: () => number[]) {
    const sample = () => {
      let total = 0;
      for (const pid of pids()) {
        try {
          const m = /VmRSS:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
          if (m) total += Number(m[1]);
        } catch {
          // process gone
        }
      }
      this.#peak = Math.max(this.#peak, total / 1024);
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
