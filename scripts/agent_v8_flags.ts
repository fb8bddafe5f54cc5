/**
 * The V8 flags the agent runs with, in one place. `deno compile --v8-flags=…` bakes them into the
 * agent binary (scripts/compile.ts, Dockerfile.agent), and the agent Job's `DENO_V8_FLAGS`
 * (manifests/agent-job.yaml) gives them to an agent run with `deno run agent.ts` (the test
 * cluster): a compiled Deno binary ignores `DENO_V8_FLAGS`, `deno run` reads it.
 * scripts/release_test.ts checks the three places agree.
 *
 * @module
 */

/**
 * Comma-separated V8 flags of the agent.
 *
 * `--max-old-space-size=48` (MB) bounds the JS heap to well under the pod's 128Mi limit, leaving
 * the rest to the relay buffers (ArrayBuffers live outside this heap) and the runtime. About 9 KiB
 * of old generation per open stream was measured (32 MiB with ~3,200 streams open): ~10 MiB at the
 * 1,010 streams the agent accepts under 128Mi, ~40 MiB at the 4,096-stream cap of a larger limit.
 * It was 64 first; with 64 one of three full bench runs drove the agent into its 128Mi limit after
 * the bench's earlier phases (bench/README.md). A smaller heap also makes V8 collect more often,
 * which frees the buffers that garbage still holds sooner.
 *
 * `--max-semi-space-size=2` (MB) keeps the young generation small, so short-lived buffers die in
 * cheap scavenges instead of being promoted and waiting for a full collection; it also takes back
 * most of the CPU the small old generation alone costs.
 *
 * Measured (with 64) with `deno task bench:local` (the real agent on loopback; 1,000 connections × 1 MiB
 * echoed, then 128 MiB on one connection; 7–10 runs each on a shared 2-core machine): agent peak
 * RSS median 209 MiB (178–223) against 274 MiB (230–325) with V8's defaults, for more agent CPU in
 * that phase (median 6.8 s against 4.9 s); wall time, throughput (58 vs 59 MiB/s) and agent CPU per
 * GiB on one connection (4.5 vs 4.2 s, within the spread) unchanged. The old-generation bound is
 * what costs the CPU (64 alone: 10–13 s); `--max-old-space-size=96` saved no more than 64 for as
 * much CPU; `--max-semi-space-size=1` saved a little more RSS, but the 1,000-connection phase
 * stalled in 5 of its 6 runs (2 of 12 with the defaults).
 *
 * `--optimize-for-size` makes V8 favour memory over speed (smaller heap growth steps, among
 * others). In the full bench's relay path (`deno task bench` with 1,000 connections × 1 MiB, 9
 * runs against 11 without it, interleaved) the agent's peak RSS fell from 103–119 MiB (median
 * 112) to 102–106 (median 105), for about 9% more agent CPU in that phase; throughput and agent
 * CPU per GiB on one connection unchanged (bench/README.md).
 *
 * `--max-opt=2` stops V8's tiers at Maglev (no TurboFan), so the agent touches less compiler code
 * and keeps less optimised code. With the flags above, in four pairs of relay-path runs, the
 * agent's peak RSS was 93–97 MiB (median 94) against 97–103 (median 102) without it, lower in
 * every pair, for the same agent CPU (at 1,000 connections and per GiB on one connection).
 */
export const AGENT_V8_FLAGS =
  "--max-old-space-size=48,--max-semi-space-size=2,--optimize-for-size,--max-opt=2";

/**
 * V8 flags of the client (`kubectl relay`): a small young generation (2 MB semi-spaces), so the
 * short-lived buffers of many busy connections are collected early; it lowered the client's peak
 * RSS with 1,000 concurrent connections by about a fifth on the loopback bench. `bin/kubectl-relay`
 * passes them to `deno run`, scripts/compile.ts compiles them into the client binary.
 */
export const CLIENT_V8_FLAGS = "--max-semi-space-size=2";
