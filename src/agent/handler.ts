/**
 * Handles one relayed request, in raw mode or tunnel mode alike: validate the
 * Header, resolve and dial the destination, answer with a status, relay.
 *
 * @module
 */

import { errorText } from "../errors.ts";
import { hostPort } from "../protocol/addr.ts";
import { decodeHeader, formatDestination, type Header } from "../protocol/header.ts";
import { Status, statusMessage } from "../protocol/status.ts";
import { DialError, dialTcp, resolveAddress, type Resolver } from "./dial.ts";
import type { Endpoint } from "./endpoint.ts";
import type { AgentLogger } from "./log.ts";
import { openFlowSocket, relayUdp } from "./relay_udp.ts";
import { relayTcp } from "./relay_tcp.ts";

/** What a request handler needs. */
export interface HandlerContext {
  log: AgentLogger;
  connectTimeoutMs: number;
  resolveTimeoutMs: number;
  udpIdleMs: number;
  /** Test hook: replaces the system resolver. */
  resolver?: Resolver;
}

/**
 * Validates raw Header bytes (exactly one Header, as carried by a tunnel OPEN) and
 * handles the request; a bad Header is rejected with BadRequest. Never rejects.
 */
export function handleHeaderBytes(
  bytes: Uint8Array,
  client: Endpoint,
  ctx: HandlerContext,
  via: string,
): Promise<void> {
  const r = decodeHeader(bytes);
  if (r.kind !== "ok" || r.length !== bytes.length) {
    const why = r.kind === "error"
      ? `${r.error}: ${r.message}`
      : r.kind === "incomplete"
      ? "truncated header"
      : "bytes after the header";
    ctx.log.log(0, "-", `${via}: bad request (${why})`);
    return client.reject(Status.BadRequest).catch(() => {});
  }
  return handleRequest(r.header, client, ctx, via);
}

/** Answers a request whose destination could not be reached: one log line, then the status. */
async function refuse(
  e: unknown,
  client: Endpoint,
  ctx: HandlerContext,
  id: string,
  dest: string,
): Promise<void> {
  const status = e instanceof DialError ? e.status : Status.UnknownError;
  const detail = errorText(e);
  ctx.log.log(0, id, `${dest}: failed: ${statusMessage(status)} (${detail})`);
  await client.reject(status).catch(() => {});
}

/** Dials the destination named by `h`, answers the client, relays until done. Never throws. */
export async function handleRequest(
  h: Header,
  client: Endpoint,
  ctx: HandlerContext,
  via: string,
): Promise<void> {
  const id = h.requestId;
  const dest = `${h.protocol} ${formatDestination(h)}`;
  const started = Date.now();
  ctx.log.log(1, id, `${dest}: request (${via})`);
  try {
    if (h.protocol === "tcp") {
      let conn: Deno.TcpConn;
      try {
        conn = await dialTcp(h.address, h.port, {
          connectTimeoutMs: ctx.connectTimeoutMs,
          resolveTimeoutMs: ctx.resolveTimeoutMs,
          resolver: ctx.resolver,
        });
      } catch (e) {
        return await refuse(e, client, ctx, id, dest);
      }
      try {
        await client.accept();
      } catch (e) {
        conn.close();
        client.abort("accept failed");
        ctx.log.log(0, id, `${dest}: client gone before status: ${e}`);
        return;
      }
      const remote = conn.remoteAddr as Deno.NetAddr;
      ctx.log.log(
        0,
        id,
        `${dest}: connected to ${hostPort(remote.hostname, remote.port)} (${via}, ${
          Date.now() - started
        }ms)`,
      );
      const r = await relayTcp(client, conn);
      ctx.log.log(
        0,
        id,
        `${dest}: closed, ${r.sent} bytes sent, ${r.received} received${
          r.error ? `, ${r.error}` : ""
        }`,
      );
    } else {
      let ip: string;
      let socket: Deno.DatagramConn;
      try {
        ip = (await resolveAddress(h.address, ctx.resolveTimeoutMs, ctx.resolver))[0];
        socket = openFlowSocket(ip);
      } catch (e) {
        return await refuse(e, client, ctx, id, dest);
      }
      try {
        await client.accept();
      } catch (e) {
        socket.close();
        client.abort("accept failed");
        ctx.log.log(0, id, `${dest}: client gone before status: ${e}`);
        return;
      }
      ctx.log.log(0, id, `${dest}: udp flow to ${hostPort(ip, h.port)} (${via})`);
      const r = await relayUdp(client, socket, ip, h.port, ctx.udpIdleMs);
      ctx.log.log(
        0,
        id,
        `${dest}: flow ended (${r.reason}), ${r.sent} datagrams sent, ${r.received} received, ${r.dropped} dropped`,
      );
    }
  } catch (e) {
    ctx.log.log(0, id, `${dest}: internal error: ${e instanceof Error ? e.stack ?? e.message : e}`);
    client.abort("internal error");
  }
}
