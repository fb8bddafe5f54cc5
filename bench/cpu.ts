/** CPU time of processes (user + system, from /proc/<pid>/stat), for CPU-seconds-per-GiB rows. */

let ticksPerSecond: number | undefined;

/** The kernel's clock ticks per second (`getconf CLK_TCK`; 100 on Linux if that fails). */
function clockTicks(): number {
  if (ticksPerSecond === undefined) {
    try {
      const out = new Deno.Command("getconf", { args: ["CLK_TCK"], stdout: "piped" }).outputSync();
      ticksPerSecond = Number(new TextDecoder().decode(out.stdout).trim()) || 100;
    } catch {
      ticksPerSecond = 100;
    }
  }
  return ticksPerSecond;
}

/** Fields of /proc/<pid>/stat after the command name: [0] = state (field 3), [1] = ppid, … */
function statFields(pid: number): string[] | undefined {
  try {
    const text = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return text.slice(text.lastIndexOf(")") + 2).split(" ");
  } catch {
    return undefined;
  }
}

/** Live processes by parent pid (one scan of /proc). */
function childrenByParent(): Map<number, number[]> {
  const map = new Map<number, number[]>();
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const f = statFields(Number(e.name));
    if (!f) continue;
    const ppid = Number(f[1]);
    const list = map.get(ppid) ?? [];
    list.push(Number(e.name));
    map.set(ppid, list);
  }
  return map;
}

/**
 * CPU seconds (utime + stime) used so far by `pid`, its waited-for children (cutime + cstime) and,
 * unless `descendants` is false, its live descendants; undefined if the process is gone. Take two
 * readings and subtract.
 */
export function cpuSeconds(pid: number | undefined, descendants = true): number | undefined {
  if (!pid) return undefined;
  const own = statFields(pid);
  if (!own) return undefined;
  const children = descendants ? childrenByParent() : new Map<number, number[]>();
  let ticks = 0;
  const seen = new Set<number>();
  const add = (p: number) => {
    if (seen.has(p)) return;
    seen.add(p);
    const f = p === pid ? own : statFields(p);
    if (!f) return;
    // utime, stime, cutime, cstime are fields 14–17, i.e. [11]–[14] here.
    ticks += Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
    for (const c of children.get(p) ?? []) add(c);
  };
  add(pid);
  return ticks / clockTicks();
}
