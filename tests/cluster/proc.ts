/**
 * Process handling for the test cluster: every component runs in its own session/process group
 * (via `setsid`), with stdout and stderr appended to a log file, so a whole component (and any
 * children it spawns) can be signalled at once and checked for leftovers.
 *
 * @module
 */

/** What to run. Stored in state.json so another process can restart a component. */
export interface ProcSpec {
  name: string;
  bin: string;
  args: string[];
  cwd?: string;
  env?: Record<string, string>;
  log: string;
}

/** A running component. `child` is set only in the process that spawned it as a direct child. */
export interface Proc {
  spec: ProcSpec;
  pid: number;
  child?: Deno.ChildProcess;
}

/**
 * Start `spec` in a new session whose id (= process group id) is the returned pid.
 * `mode: "child"` keeps it a direct child (reaped by us on exit: use in long-lived owners);
 * `mode: "orphan"` double-forks so nothing of it stays attached to this Deno process.
 */
export async function spawnProc(spec: ProcSpec, mode: "child" | "orphan"): Promise<Proc> {
  const env = { ...spec.env, RELAY_CLUSTER_LOG: spec.log };
  if (mode === "child") {
    const child = new Deno.Command("bash", {
      args: [
        "-c",
        'exec setsid setpriv --pdeathsig KILL "$0" "$@" >>"$RELAY_CLUSTER_LOG" 2>&1 </dev/null',
        spec.bin,
        ...spec.args,
      ],
      cwd: spec.cwd,
      env,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    return { spec, pid: child.pid, child };
  }
  const out = await new Deno.Command("bash", {
    args: [
      "-c",
      'setsid "$0" "$@" >>"$RELAY_CLUSTER_LOG" 2>&1 </dev/null & echo $!',
      spec.bin,
      ...spec.args,
    ],
    cwd: spec.cwd,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const pid = Number(new TextDecoder().decode(out.stdout).trim());
  if (!out.success || !(pid > 0)) {
    throw new Error(`cannot start ${spec.name}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return { spec, pid };
}

/** Parse /proc/PID/stat: [state, pgid], or null if the process is gone. */
function procStat(pid: number): [string, number] | null {
  try {
    const s = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const rest = s.slice(s.lastIndexOf(")") + 2).split(" ");
    return [rest[0], Number(rest[2])];
  } catch {
    return null;
  }
}

/** True if `pid` exists and is not a zombie. */
export function isAlive(pid: number): boolean {
  const st = procStat(pid);
  return st !== null && st[0] !== "Z";
}

/** Live (non-zombie) processes whose process group is `pgid`. */
export function groupMembers(pgid: number): number[] {
  const members: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    const pid = Number(e.name);
    if (!Number.isInteger(pid) || pid <= 0) continue;
    const st = procStat(pid);
    if (st && st[0] !== "Z" && st[1] === pgid) members.push(pid);
  }
  return members;
}

/** Send `signal` to the whole process group `pgid` (ignores "no such process"). */
export function killGroup(pgid: number, signal: Deno.Signal): void {
  try {
    Deno.kill(-pgid, signal);
  } catch {
    // already gone
  }
}

/**
 * SIGTERM the group, wait up to `graceMs` for every member to exit, then SIGKILL and wait again.
 * Reaps `child` if given. Throws if members survive SIGKILL.
 */
export async function stopProc(proc: Proc, graceMs = 5000): Promise<void> {
  const deadline = (ms: number) => performance.now() + ms;
  const waitGone = async (until: number) => {
    while (groupMembers(proc.pid).length > 0 && performance.now() < until) {
      await new Promise((r) => setTimeout(r, 50));
    }
    return groupMembers(proc.pid).length === 0;
  };
  killGroup(proc.pid, "SIGTERM");
  if (!await waitGone(deadline(graceMs))) {
    killGroup(proc.pid, "SIGKILL");
    if (!await waitGone(deadline(5000))) {
      throw new Error(
        `${proc.spec.name} (pgid ${proc.pid}) survived SIGKILL: ${groupMembers(proc.pid)}`,
      );
    }
  }
  if (proc.child) await proc.child.status;
}

/** TCP ports in LISTEN state on this host (IPv4 and IPv6), from /proc/net/tcp{,6}. */
export function listeningTcpPorts(): Set<number> {
  const ports = new Set<number>();
  for (const f of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = Deno.readTextFileSync(f);
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 4 || cols[3] !== "0A") continue;
      ports.add(parseInt(cols[1].split(":")[1], 16));
    }
  }
  return ports;
}

/** Bound IPv4 sockets (TCP in LISTEN, any UDP) as `{proto, ip, port}`, from /proc/net. */
export function boundIpv4Sockets(): { proto: "tcp" | "udp"; ip: string; port: number }[] {
  const out: { proto: "tcp" | "udp"; ip: string; port: number }[] = [];
  for (const proto of ["tcp", "udp"] as const) {
    let text = "";
    try {
      text = Deno.readTextFileSync(`/proc/net/${proto}`);
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      const [hex, portHex] = cols[1]?.split(":") ?? [];
      if (!hex || hex.length !== 8 || (proto === "tcp" && cols[3] !== "0A")) continue;
      // Little-endian: "0100007F" is 127.0.0.1.
      const ip = [6, 4, 2, 0].map((i) => parseInt(hex.slice(i, i + 2), 16)).join(".");
      out.push({ proto, ip, port: parseInt(portHex, 16) });
    }
  }
  return out;
}

/** Second octets `y` of the 127.y.0.0/16 networks that hold a bound TCP or UDP IPv4 socket. */
export function loopbackOctetsInUse(): Set<number> {
  const used = new Set<number>();
  for (const s of boundIpv4Sockets()) {
    const [a, b] = s.ip.split(".").map(Number);
    if (a === 127) used.add(b);
  }
  return used;
}

/**
 * A free TCP port on 127.0.0.1, chosen at random BELOW the kernel's ephemeral range
 * (/proc/sys/net/ipv4/ip_local_port_range), so that no outgoing connection can take it between
 * this check and the component's bind. Falls back to an ephemeral port.
 */
export function freePort(): number {
  let low = 32768;
  try {
    low = Number(Deno.readTextFileSync("/proc/sys/net/ipv4/ip_local_port_range").split(/\s+/)[0]);
  } catch {
    // default range
  }
  const from = 20000;
  const to = Math.min(low, 32768) - 1;
  for (let i = 0; to > from && i < 50; i++) {
    const port = from + Math.floor(Math.random() * (to - from));
    try {
      const l = Deno.listen({ hostname: "127.0.0.1", port });
      l.close();
      return port;
    } catch {
      // taken, try another
    }
  }
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** The last `n` lines of a log file ("" if unreadable). */
export function logTail(path: string, n = 30): string {
  try {
    return Deno.readTextFileSync(path).trimEnd().split("\n").slice(-n).join("\n");
  } catch {
    return "";
  }
}
