/** noDelayToPort: switches TCP_NODELAY on for the sockets to one port, and only for those. */

import assert from "node:assert/strict";
import { noDelayToPort, noDelayWhileOpening } from "./nodelay.ts";

const lib = Deno.dlopen(Deno.build.os === "darwin" ? "libSystem.dylib" : "libc.so.6", {
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
});

/** TCP_NODELAY of the socket whose local port is `port` (found among this process's fds). */
function noDelayOfLocalPort(port: number): boolean {
  for (const e of Deno.readDirSync("/proc/self/fd")) {
    const fd = Number(e.name);
    const addr = new Uint8Array(128);
    const len = new Uint8Array(new Uint32Array([128]).buffer);
    if (lib.symbols.getsockname(fd, addr, len) !== 0 || ((addr[2] << 8) | addr[3]) !== port) {
      continue;
    }
    const value = new Uint8Array(4);
    const vlen = new Uint8Array(new Uint32Array([4]).buffer);
    assert.equal(lib.symbols.getsockopt(fd, 6, 1, value, vlen), 0);
    return new Int32Array(value.buffer)[0] !== 0;
  }
  throw new Error(`no socket with local port ${port}`);
}

Deno.test({
  name: "nodelay: sockets to the given port get TCP_NODELAY, others keep Nagle",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const a = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const b = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const portA = (a.addr as Deno.NetAddr).port;
    const toA = await Deno.connect({ hostname: "127.0.0.1", port: portA });
    const toB = await Deno.connect({ hostname: "127.0.0.1", port: (b.addr as Deno.NetAddr).port });
    const fromA = await a.accept();
    const fromB = await b.accept();
    const localA = (toA.localAddr as Deno.NetAddr).port;
    const localB = (toB.localAddr as Deno.NetAddr).port;
    try {
      assert.equal(noDelayOfLocalPort(localA), false, "Deno.connect already set TCP_NODELAY");
      assert.equal(noDelayToPort(portA), 1);
      assert.equal(noDelayOfLocalPort(localA), true);
      assert.equal(noDelayOfLocalPort(localB), false);
    } finally {
      for (const c of [toA, toB, fromA, fromB, a, b]) c.close();
    }
  },
});

Deno.test({
  name: "nodelay: a connection opened while noDelayWhileOpening runs gets TCP_NODELAY by itself",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (l.addr as Deno.NetAddr).port;
    const conns: Deno.Conn[] = [];
    const settle = () => new Promise((r) => setTimeout(r, 30));
    /** A new connection to the listener, both ends kept for closing; returns the client end. */
    const connect = async () => {
      const accepted = l.accept();
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      conns.push(c, await accepted);
      return (c.localAddr as Deno.NetAddr).port;
    };
    try {
      const stop = noDelayWhileOpening(port);
      const during = await connect();
      await settle();
      assert.equal(noDelayOfLocalPort(during), true);
      stop();
      stop(); // idempotent
      const after = await connect();
      await settle();
      assert.equal(noDelayOfLocalPort(after), false);
    } finally {
      for (const c of conns) c.close();
      l.close();
    }
  },
});
