/** bin/kubectl-relay (the source-install launcher) when `deno` is not on PATH. */
import assert from "node:assert/strict";

const LAUNCHER = new URL("../bin/kubectl-relay", import.meta.url).pathname;
const ROOT = new URL("../", import.meta.url).pathname.replace(/\/$/, "");

/** A PATH holding only the tools the launcher itself needs (and `extra` scripts). */
async function bareBin(extra: Record<string, string> = {}): Promise<string> {
  const dir = await Deno.makeTempDir();
  for (const tool of ["sh", "readlink", "dirname"]) {
    const which = await new Deno.Command("sh", { args: ["-c", `command -v ${tool}`] }).output();
    await Deno.symlink(new TextDecoder().decode(which.stdout).trim(), `${dir}/${tool}`);
  }
  for (const [name, body] of Object.entries(extra)) {
    await Deno.writeTextFile(`${dir}/${name}`, body, { mode: 0o755 });
  }
  return dir;
}

async function launch(path: string): Promise<{ code: number; out: string; err: string }> {
  const o = await new Deno.Command(LAUNCHER, {
    args: ["-V"],
    env: { PATH: path },
    clearEnv: true,
    stdin: "null",
  }).output();
  const dec = new TextDecoder();
  return { code: o.code, out: dec.decode(o.stdout), err: dec.decode(o.stderr) };
}

Deno.test("launcher: without deno it runs the pinned Deno through npx", async () => {
  const dir = await bareBin({ npx: '#!/bin/sh\necho "npx $*"\n' });
  try {
    const r = await launch(dir);
    assert.equal(r.code, 0, r.err);
    assert.equal(
      r.out.trim(),
      `npx -y deno@2.9.6 run -A --v8-flags=--max-semi-space-size=2 --quiet --no-prompt --config ${ROOT}/deno.json ${ROOT}/main.ts -V`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("launcher: without deno and npx it says in one line how to install Deno", async () => {
  const dir = await bareBin();
  try {
    const r = await launch(dir);
    assert.equal(r.code, 1);
    assert.equal(r.out, "");
    assert.match(r.err, /^error: kubectl relay needs Deno 2\.9\.6: install it .*\n$/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("launcher: $DENO wins", async () => {
  const dir = await bareBin({ "fake-deno": '#!/bin/sh\necho "fake $1"\n' });
  try {
    const o = await new Deno.Command(LAUNCHER, {
      args: ["-V"],
      env: { PATH: dir, DENO: `${dir}/fake-deno` },
      clearEnv: true,
    }).output();
    assert.equal(new TextDecoder().decode(o.stdout).trim(), "fake run");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
