/** Tests of tests/run.ts's parsing of Deno's test summary line. */

import assert from "node:assert/strict";
import { parseSummary } from "../run.ts";

Deno.test("parseSummary: ok line with steps and ANSI colours", () => {
  const out =
    "running 3 tests\n...\n\x1b[0m\x1b[32mok\x1b[0m | 12 passed (3 steps) | 0 failed \x1b[0m\x1b[38;5;245m(2s)\x1b[0m\n";
  assert.deepEqual(parseSummary(out), { ok: true, passed: 12, failed: 0 });
});

Deno.test("parseSummary: FAILED line, last summary wins", () => {
  const out = [
    "ok | 1 passed | 0 failed (1ms)",
    "ERRORS",
    "FAILED | 4 passed (1 step) | 2 failed | 1 ignored (9s)",
    "",
  ].join("\n");
  assert.deepEqual(parseSummary(out), { ok: false, passed: 4, failed: 2 });
});

Deno.test("parseSummary: no summary line → counts result lines (interrupted run)", () => {
  const out = [
    "running 3 tests from ./a_test.ts",
    "first ... \x1b[0m\x1b[32mok\x1b[0m (1ms)",
    "second ...",
    "  step one ... ok (1ms)",
    "second ... FAILED (2ms)",
    "third ...",
    "SIGINT The following tests were pending:",
    "",
  ].join("\n");
  assert.deepEqual(parseSummary(out), { ok: false, passed: 1, failed: 1 });
});

Deno.test("parseSummary: nothing recognisable → null", () => {
  assert.equal(parseSummary("error: Module not found\n"), null);
  assert.equal(parseSummary("this line says ok | 3 passed | 0 failed inline\n"), null);
});
