/**
 * TCP_NODELAY for the apiserver connections Deno opens for `fetch` and `WebSocket`: Deno leaves
 * Nagle's algorithm on for them and offers no option. With Nagle on, a small write made while an
 * earlier one is unacknowledged waits for the apiserver's delayed ACK (40 ms on Linux): the first
 * byte of a new connection right after a PONG, the second of two datagrams.
 *
 * The sockets are found by their peer port and switched with libc's `setsockopt` through Deno's
 * FFI. Where that is not possible (no FFI permission, no libc, Windows) nothing changes and the
 * caller keeps working around Nagle.
 *
 * @module
 */

const IPPROTO_TCP = 6;
const TCP_NODELAY = 1; // the same on Linux and macOS

interface Libc {
  setsockopt(fd: number, level: number, name: number, value: Uint8Array, len: number): number;
  getpeername(fd: number, addr: Uint8Array, len: Uint8Array): number;
}

let libc: Libc | null | undefined;

function loadLibc(): Libc | null {
  if (libc !== undefined) return libc;
  libc = null;
  const path = { linux: "libc.so.6", darwin: "libSystem.dylib" }[Deno.build.os as string];
  if (!path) return libc;
  try {
    if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return libc;
    const lib = Deno.dlopen(path, {
      setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
      getpeername: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
    });
    libc = lib.symbols as unknown as Libc;
  } catch {
    // no FFI here: leave Nagle alone
  }
  return libc;
}

/** This process's open file descriptors (`/dev/fd` on Linux and macOS), or every plausible one. */
function openFds(): number[] {
  try {
    return [...Deno.readDirSync("/dev/fd")].map((e) => Number(e.name)).filter((fd) => fd > 2);
  } catch {
    return Array.from({ length: 1021 }, (_, i) => i + 3);
  }
}

/**
 * Turns TCP_NODELAY on for every TCP socket of this process whose peer port is `port` (the
 * apiserver's). Returns how many sockets it set, 0 when it cannot.
 */
export function noDelayToPort(port: number): number {
  return noDelayOn(openFds(), [port]);
}

/**
 * TCP_NODELAY for those of `fds` that are TCP sockets to one of `ports`. Returns how many were
 * set, and calls `connected` for each descriptor whose peer it could read (one still connecting
 * has none yet).
 */
function noDelayOn(
  fds: Iterable<number>,
  ports: readonly number[],
  connected: (fd: number) => void = () => {},
): number {
  const c = loadLibc();
  if (!c) return 0;
  const addr = new Uint8Array(128);
  const len = new Uint8Array(4);
  const one = new Uint8Array(new Int32Array([1]).buffer);
  let set = 0;
  for (const fd of fds) {
    new DataView(len.buffer).setUint32(0, addr.length, true);
    if (c.getpeername(fd, addr, len) !== 0) continue;
    connected(fd);
    // sockaddr_in and sockaddr_in6 keep the port at bytes 2..3, big-endian (Linux and macOS).
    if (!ports.includes((addr[2] << 8) | addr[3])) continue;
    if (c.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, one, 4) === 0) set++;
  }
  return set;
}

/** Ports a connection is being opened to (the WebSocket's), with how many opens wait on each. */
const opening = new Map<number, number>();
let ticker: ReturnType<typeof setInterval> | undefined;

/**
 * While a WebSocket to `port` is being opened, switches TCP_NODELAY on for its socket as soon as
 * it exists (checked every millisecond; on Linux, setting it also sends what Nagle held back): the
 * TLS handshake's last flight and the HTTP upgrade request would otherwise wait ~40 ms for the
 * apiserver's delayed ACK. Call the returned function once the connection is open (or failed).
 * Does nothing where `noDelayToPort` cannot work.
 */
export function noDelayWhileOpening(port: number): () => void {
  if (!loadLibc()) return () => {};
  opening.set(port, (opening.get(port) ?? 0) + 1);
  if (ticker === undefined) {
    // Each tick looks only at descriptors it has not seen connected yet, so a burst of
    // connections (direct mode) does not rescan every socket of the process every millisecond.
    let done = new Set<number>();
    ticker = setInterval(() => {
      const now = openFds();
      const next = new Set(now.filter((fd) => done.has(fd)));
      noDelayOn(now.filter((fd) => !done.has(fd)), [...opening.keys()], (fd) => next.add(fd));
      done = next;
    }, 1);
  }
  let done = false;
  return () => {
    if (done) return;
    done = true;
    const left = (opening.get(port) ?? 1) - 1;
    if (left > 0) opening.set(port, left);
    else opening.delete(port);
    if (opening.size === 0 && ticker !== undefined) {
      clearInterval(ticker);
      ticker = undefined;
    }
  };
}
