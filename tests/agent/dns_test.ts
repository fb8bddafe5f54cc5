/**
 * Hostname resolution in the agent, through the system resolver: the agent runs in a
 * private mount namespace whose /etc/resolv.conf names only a fake DNS server on a
 * loopback address (no query ever leaves the machine), with a search domain, as
 * cluster DNS has. Skipped where `unshare --mount` is unavailable (not root).
 */

import assert from "node:assert/strict";
import { encodeHeader, type Header } from "../../src/protocol/header.ts";
import { Status } from "../../src/protocol/status.ts";
import { Session, StreamRejectedError } from "../../src/mux/mod.ts";
import { connTransport } from "../../src/mux/mod.ts";
import { canUnshareMount, startAgentProcess } from "../_lib/agent.ts";
import { startFakeDns } from "../_lib/dns.ts";
import { startTcpEcho, startUdpEcho } from "../_lib/echo.ts";
import { randomLoopback, readAll, writeAll } from "../_lib/net.ts";
import { encodeUdpFrame, UdpFrameDecoder } from "../../src/protocol/udp.ts";

const ok = await canUnshareMount();

function header(protocol: "tcp" | "udp", name: string, port: number): Uint8Array {
  const h: Header = {
    requestId: crypto.randomUUID(),
    protocol,
    port,
    address: { type: "hostname", name },
  };
  return encodeHeader(h);
}

Deno.test({
  name: "agent DNS: search domains apply; unknown → no such host; silent server → resolve timeout",
  ignore: !ok,
  async fn() {
    const dnsAddr = randomLoopback();
    const dns = startFakeDns(dnsAddr, { "echo.relay.test": "127.0.0.1" }, [
      "slow.relay.test",
      "slow",
    ]);
    const echo = startTcpEcho();
    const udp = startUdpEcho();
    const agent = await startAgentProcess({
      args: ["--resolve-timeout", "3s"],
      resolvConf:
        `nameserver ${dnsAddr}\nsearch relay.test\noptions ndots:1 timeout:1 attempts:1\n`,
    });
    const conn = await agent.connect();
    const session = new Session(connTransport(conn), { role: "client" });
    try {
      // "echo" is found as echo.relay.test through the search list, as `redis.default` is in a pod.
      const s = await session.openStream(header("tcp", "echo", echo.port));
      await s.write(new TextEncoder().encode("via search domain"));
      await s.closeWrite();
      let text = "";
      for (let c = await s.read(); c !== null; c = await s.read()) {
        text += new TextDecoder().decode(c);
      }
      assert.equal(text, "via search domain");
      assert.ok(dns.queries.includes("echo.relay.test"), dns.queries.join(","));

      // UDP to a hostname: resolved to an address for the flow's socket.
      const u = await session.openStream(header("udp", "echo.relay.test.", udp.port));
      await u.write(encodeUdpFrame(new TextEncoder().encode("dns-udp")));
      const dec = new UdpFrameDecoder();
      const got: Uint8Array[] = [];
      while (got.length === 0) {
        const c = await u.read();
        assert.ok(c);
        got.push(...dec.push(c));
      }
      assert.equal(new TextDecoder().decode(got[0]), "dns-udp");
      u.reset("done");

      await assert.rejects(
        session.openStream(header("tcp", "nosuch", 80)),
        (e) => e instanceof StreamRejectedError && e.status === Status.NoSuchHost,
      );
      await assert.rejects(
        session.openStream(header("tcp", "slow", 80)),
        (e) => e instanceof StreamRejectedError && e.status === Status.ResolveTimeout,
      );

      // Raw mode, same resolver.
      const raw = await agent.connect();
      try {
        await writeAll(raw, header("tcp", "nosuch.example", 80));
        assert.deepEqual(await readAll(raw), new Uint8Array([Status.NoSuchHost]));
      } finally {
        raw.close();
      }
    } finally {
      session.close("done");
      await session.closed;
      await agent.stop();
      await dns.close();
      await echo.close();
      await udp.close();
    }
  },
});
