/**
 * One forwarding request as the user gave it: a target, its ports and where to listen.
 *
 * @module
 */

import { UsageError } from "../errors.ts";
import type { PortSpec } from "./ports.ts";
import { isIPv4, isIPv6 } from "../protocol/addr.ts";
import type { TargetRef } from "./target.ts";

/** One target with its ports, from the command line or a line of a `-f` file. */
export interface ForwardRequest {
  target: TargetRef;
  ports: PortSpec[];
  /** Namespace given for this target (`-n` on its file line), else the global one. */
  namespace?: string;
  /** Listen addresses for this target, already expanded (`localhost` → 127.0.0.1, ::1). */
  addresses: string[];
}

/** Expands and validates `--address` values as kubectl does. */
export function expandAddresses(list: string[] | undefined): string[] {
  const out: string[] = [];
  for (const a of list ?? ["127.0.0.1"]) {
    const values = a === "localhost" ? ["127.0.0.1", "::1"] : [a];
    for (const v of values) {
      if (!isIPv4(v) && !isIPv6(v)) {
        throw new UsageError(
          `${a} is not a valid IP address (--address accepts IP addresses or localhost)`,
        );
      }
      if (!out.includes(v)) out.push(v);
    }
  }
  return out;
}
