/** The one duration parser, as the client's flags and the agent's flags read it. */

import assert from "node:assert/strict";
import { parseDuration } from "./duration.ts";
import { parseDuration as parseDurationFlag } from "../cli/duration.ts";
import { parseAgentDuration } from "../agent/options.ts";
import { UsageError } from "../errors.ts";

Deno.test("durations: units, sums, fractions with a unit, bare integers as seconds", () => {
  const cases: [string, number][] = [
    ["0", 0],
    ["5", 5000],
    ["500ms", 500],
    ["30s", 30_000],
    ["1.5s", 1500],
    ["0.25ms", 0],
    ["1.5ms", 2],
    ["1m30s", 90_000],
    ["2h", 7_200_000],
    ["1h2m3s4ms", 3_723_004],
    ["0s", 0],
  ];
  for (const [text, ms] of cases) assert.equal(parseDuration(text), ms, text);
});

Deno.test("durations: a bare fraction, a missing or unknown unit, signs and spaces are invalid", () => {
  for (
    const bad of [
      "",
      "1.5",
      ".5s",
      "5.s",
      "s",
      "5 s",
      "5 minutes",
      "-1s",
      "+1s",
      "1d",
      "1us",
      "1s ",
      "1m30",
    ]
  ) {
    assert.equal(parseDuration(bad), undefined, JSON.stringify(bad));
  }
});

Deno.test("durations: the client's and the agent's flags agree, each with its own error", () => {
  for (const text of ["5", "1m30s", "1.5s", "0"]) {
    assert.equal(parseDurationFlag(text, "--x"), parseAgentDuration(text, "--x"), text);
  }
  assert.throws(() => parseDurationFlag("1.5", "--request-timeout"), (e: unknown) => {
    assert.ok(e instanceof UsageError);
    assert.equal(
      e.message,
      'invalid argument "1.5" for "--request-timeout" flag: invalid duration',
    );
    return true;
  });
  assert.throws(
    () => parseAgentDuration("1.5", "--idle-exit"),
    /invalid duration "1.5" for --idle-exit/,
  );
});
