/**
 * The agent's memory plan: how many streams it accepts, sized to the memory limit of its
 * container (read from its cgroup), so that a busy agent refuses new streams instead of being
 * OOM-killed with all its connections.
 *
 * What the agent holds is bounded by construction (see ARCHITECTURE.md): a fixed part (the Deno
 * runtime, the session's receive budget, the pools of read buffers, the frame writer's queue) and
 * a part per open stream (its receive window floor, its probe buffer, its sockets and state).
 *
 * @module
 */

import { BufferPool, CHUNK_SIZE, LARGE_READ_BUFFER } from "../mux/buffers.ts";
import type { ReadPools } from "./dest_reader.ts";

/** Each tunnel session's receive budget (SessionOptions.receiveBudget). */
export const AGENT_RECEIVE_BUDGET = 8 * 1024 * 1024;
/** The read buffer of a raw-mode client connection (the client's is SMALL_READ_BUFFER). */
export const AGENT_READ_BUFFER = 8 * 1024;
/** Large read buffers the agent lends during bursts: 64 × 64 KiB = 4 MiB. */
export const agentBufferPool: BufferPool = new BufferPool(LARGE_READ_BUFFER, 64);
/**
 * The buffers destination reads borrow (src/agent/dest_reader.ts): the large ones above, and
 * 128 × 16 KiB = 2 MiB for the smaller reads of many busy connections.
 */
export const agentReadPools: ReadPools = {
  large: agentBufferPool,
  small: new BufferPool(CHUNK_SIZE, 128),
};

/**
 * The fixed part, as the memory cgroup counts it: runtime (~15 MiB idle), JS heap (~25 MiB under
 * load), receive budget (8 MiB), lent read buffers (6 MiB, agentReadPools).
 */
export const AGENT_FIXED_MEMORY = 54 * 1024 * 1024;
/**
 * Per open stream: its window floor (32 KiB, MIN_STREAM_WINDOW), a 1 KiB probe buffer
 * (PROBE_SIZE), the destination socket inside Deno (~35 KiB when busy, measured) and its JS state
 * (~7 KiB: the Stream, its relay loops and their promises; `deno task bench:local --phases idle`).
 */
export const AGENT_STREAM_MEMORY = 75 * 1024;
/** Streams per session when the memory limit is unknown (or very large). */
export const MAX_AGENT_STREAMS = 4096;
/** Never fewer than this, however small the limit. */
export const MIN_AGENT_STREAMS = 64;

/** Streams one session may have open under a memory limit of `limit` bytes (undefined: none). */
export function streamCap(limit: number | undefined): number {
  if (limit === undefined) return MAX_AGENT_STREAMS;
  const n = Math.floor((limit - AGENT_FIXED_MEMORY) / AGENT_STREAM_MEMORY);
  return Math.min(MAX_AGENT_STREAMS, Math.max(MIN_AGENT_STREAMS, n));
}

/**
 * This process's memory limit in bytes from its memory cgroup (v1 `memory.limit_in_bytes` or v2
 * `memory.max`), or undefined when there is none or it cannot be read. `read` reads a text file.
 */
export function cgroupMemoryLimit(
  read: (path: string) => string = Deno.readTextFileSync,
): number | undefined {
  let lines: string[];
  try {
    lines = read("/proc/self/cgroup").split("\n");
  } catch {
    return undefined;
  }
  const files: string[] = [];
  for (const line of lines) {
    const [, controllers, path] = line.split(":");
    if (path === undefined) continue;
    const dir = path === "/" ? "" : path;
    if (controllers.split(",").includes("memory")) {
      files.push(`/sys/fs/cgroup/memory${dir}/memory.limit_in_bytes`);
    } else if (controllers === "") files.push(`/sys/fs/cgroup${dir}/memory.max`);
  }
  for (const file of files) {
    let text: string;
    try {
      text = read(file).trim();
    } catch {
      continue;
    }
    if (text === "max") return undefined;
    const n = Number(text);
    // cgroup v1 reports "no limit" as a huge number (close to 2^63).
    if (Number.isSafeInteger(n) && n > 0) return n;
    return undefined;
  }
  return undefined;
}
