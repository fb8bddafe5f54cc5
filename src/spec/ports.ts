import { UsageError } from "../errors.ts";
import type { Protocol } from "../protocol/header.ts";

/** One `[LOCAL:]REMOTE[@tcp|@udp]` argument. */
export interface PortSpec {
  /** Local port; 0 means a random free port (`:53`). */
  local: number;
  /** Remote port number, or a port name (`http`) resolved later against the target. */
  remote: number | string;
  protocol: Protocol;
  /** The argument as the user wrote it, for messages. */
  text: string;
}

const PORT_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** Parses a port number 1..65535, or returns undefined if `s` is not all digits. */
function parsePortNumber(s: string, text: string): number | undefined {
  if (!/^\d+$/.test(s)) return undefined;
  const n = Number(s);
  if (n < 1 || n > 65535) {
    throw new UsageError(`invalid port "${text}": port ${s} is out of range (1-65535)`);
  }
  return n;
}

/** Parses one port argument as kubectl port-forward accepts it, plus a `@tcp`/`@udp` suffix. */
export function parsePortSpec(text: string): PortSpec {
  let body = text;
  let protocol: Protocol = "tcp";
  const at = body.lastIndexOf("@");
  if (at >= 0) {
    const proto = body.slice(at + 1).toLowerCase();
    if (proto !== "tcp" && proto !== "udp") {
      throw new UsageError(`invalid port "${text}": protocol must be tcp or udp, not "${proto}"`);
    }
    protocol = proto;
    body = body.slice(0, at);
  }
  const parts = body.split(":");
  if (parts.length > 2 || body === "") {
    throw new UsageError(`invalid port "${text}": expected [LOCAL_PORT:]REMOTE_PORT[@tcp|@udp]`);
  }
  const [localText, remoteText] = parts.length === 2 ? parts : [parts[0], parts[0]];
  if (parts.length === 1 && !/^\d+$/.test(localText)) {
    throw new UsageError(
      `invalid port "${text}": a named remote port needs a local port (LOCAL:${localText})`,
    );
  }
  let local = 0;
  if (localText !== "") {
    const n = parsePortNumber(localText, text);
    if (n === undefined) {
      throw new UsageError(`invalid port "${text}": local port "${localText}" must be a number`);
    }
    local = n;
  } else if (parts.length === 1) {
    throw new UsageError(`invalid port "${text}"`);
  }
  if (remoteText === "") {
    throw new UsageError(`invalid port "${text}": remote port is empty`);
  }
  const remoteNumber = parsePortNumber(remoteText, text);
  if (remoteNumber === undefined) {
    if (!PORT_NAME.test(remoteText) || remoteText.length > 15) {
      throw new UsageError(`invalid port "${text}": "${remoteText}" is not a valid port name`);
    }
  }
  return { local, remote: remoteNumber ?? remoteText, protocol, text };
}
