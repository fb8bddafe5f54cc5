/** The agent's stream cap and how it finds its memory limit. */

import assert from "node:assert/strict";
import {
  AGENT_FIXED_MEMORY,
  AGENT_STREAM_MEMORY,
  cgroupMemoryLimit,
  MAX_AGENT_STREAMS,
  MIN_AGENT_STREAMS,
  streamCap,
} from "./memory.ts";

const MiB = 1024 * 1024;

/** A fake file system for `cgroupMemoryLimit`. */
function files(map: Record<string, string>): (path: string) => string {
  return (path) => {
    if (!(path in map)) throw new Deno.errors.NotFound(path);
    return map[path];
  };
}

Deno.test("memory: the stream cap fits the manifest's 128Mi limit, with room for 1,000 streams", () => {
  const cap = streamCap(128 * MiB);
  assert.ok(cap >= 1000 && cap <= 2000, `cap ${cap}`);
  assert.ok(AGENT_FIXED_MEMORY + cap * AGENT_STREAM_MEMORY <= 128 * MiB);
  assert.equal(streamCap(undefined), MAX_AGENT_STREAMS);
  assert.equal(streamCap(16 * MiB), MIN_AGENT_STREAMS);
  assert.equal(streamCap(64 * 1024 * MiB), MAX_AGENT_STREAMS);
});

Deno.test("memory: cgroup v1 limit from the memory controller's path", () => {
  const read = files({
    "/proc/self/cgroup": "12:pids:/x\n4:memory:/kubepods/pod1/c1\n0::/\n",
    "/sys/fs/cgroup/memory/kubepods/pod1/c1/memory.limit_in_bytes": "134217728\n",
  });
  assert.equal(cgroupMemoryLimit(read), 128 * MiB);
});

Deno.test("memory: cgroup v2 limit, and 'max' or v1's huge number mean none", () => {
  assert.equal(
    cgroupMemoryLimit(files({
      "/proc/self/cgroup": "0::/\n",
      "/sys/fs/cgroup/memory.max": "50331648\n",
    })),
    48 * MiB,
  );
  assert.equal(
    cgroupMemoryLimit(files({
      "/proc/self/cgroup": "0::/a/b\n",
      "/sys/fs/cgroup/a/b/memory.max": "max\n",
    })),
    undefined,
  );
  assert.equal(
    cgroupMemoryLimit(files({
      "/proc/self/cgroup": "4:memory:/\n",
      "/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
    })),
    undefined,
  );
  assert.equal(cgroupMemoryLimit(files({})), undefined);
});
