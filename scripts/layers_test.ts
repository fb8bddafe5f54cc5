import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { checkLayers, importsOf } from "./layers.ts";

const rules = (files: Record<string, string>) =>
  checkLayers(new Map(Object.entries(files))).map((v) => `${v.from} → ${v.to}: ${v.rule}`);

Deno.test("layers: imports that point down, within a folder or to npm pass", () => {
  assertEquals(
    rules({
      "main.ts": `import { run } from "./src/cli/run.ts";`,
      "src/cli/run.ts": `import { relay } from "../client/relay.ts";\nimport x from "npm:yaml";`,
      "src/client/relay.ts": `import { Session } from "../mux/mod.ts";\nimport "./opener.ts";`,
      "src/mux/mod.ts":
        `export { Session } from "./session.ts";\nexport * from "./_frame_writer.ts";`,
      "src/agent/server.ts": `import { decodeHeader } from "../protocol/header.ts";`,
    }),
    [],
  );
});

Deno.test("layers: an upward import, an agent import of kube, a private file and a cycle fail", () => {
  assertEquals(
    rules({
      "src/kube/config.ts": `import type { Flags } from "../cli/flags.ts";`,
      "src/agent/server.ts": `import { AGENT_PORT } from "../kube/agent.ts";`,
      "src/client/relay.ts": `import { w } from "../mux/_frame_writer.ts";`,
      "src/proxy/a.ts": `import { b } from "../forward/b.ts";`,
      "src/forward/b.ts": `const m = await import("../proxy/a.ts");`,
      "src/mux/s.ts": `import { h } from "../../tests/_lib/x.ts";`,
    }),
    [
      "src/kube/config.ts → src/cli/flags.ts: kube imports cli, a layer above it",
      "src/agent/server.ts → src/kube/agent.ts: the agent imports only protocol/ and mux/",
      "src/client/relay.ts → src/mux/_frame_writer.ts: private file imported from another folder",
      "src/mux/s.ts → tests/_lib/x.ts: product code imports test or tool code",
      "forward → proxy: folder cycle forward → proxy → forward",
    ],
  );
});

Deno.test("layers: importsOf finds static, re-export, side-effect and dynamic imports", () => {
  assertEquals(
    importsOf(
      `import { a } from "./a.ts";\nimport type {\n  B,\n} from "../b.ts";\nexport * from "./c.ts";\nimport "./d.ts";\nawait import("./e.ts");\nimport x from "npm:x";`,
    ),
    ["./a.ts", "../b.ts", "./c.ts", "./d.ts", "./e.ts"],
  );
});
