/**
 * `deno task layers` — checks that product code imports only downwards.
 *
 * Every file under `src/` (and the entry points `main.ts`, `agent.ts`) belongs to a layer; a file
 * may import from its own folder, from a lower layer, or from another folder of the same layer as
 * long as folders do not import each other in a cycle. The agent may import only `protocol/` and
 * `mux/` (and the root files of the lowest layer). A file whose name starts with `_` is private
 * to its folder. Tests (`*_test.ts`) are not product code and are skipped. `deno.json` (read for the
 * version) counts as a root file of the lowest layer.
 *
 * Prints the layer table and every violation; exits 1 if there is one.
 *
 * @module
 */

/** Layers, top first. A folder is `src/<name>`; `.` means a root file of `src/`. */
export const LAYERS: readonly { name: string; folders: readonly string[] }[] = [
  { name: "entry", folders: ["main.ts", "agent.ts"] },
  { name: "cli", folders: ["cli"] },
  { name: "client", folders: ["client"] },
  { name: "local + cluster", folders: ["proxy", "forward", "kube", "agent"] },
  { name: "session + request", folders: ["mux", "spec"] },
  { name: "codecs", folders: ["protocol", "errors.ts", "version.ts", "deno.json"] },
];

/** What the agent may import besides itself. */
const AGENT_MAY_IMPORT = new Set(["protocol", "mux", "errors.ts", "version.ts"]);

/** One import edge that breaks a rule. */
export interface Violation {
  from: string;
  to: string;
  rule: string;
}

/** The unit a file belongs to: `cli`, `mux`, `errors.ts`, `main.ts`, … (null: not product code). */
export function unitOf(path: string): string | null {
  if (path === "main.ts" || path === "agent.ts" || path === "deno.json") return path;
  const m = /^src\/([^/]+)(\/.*)?$/.exec(path);
  return m === null ? null : m[1];
}

function rankOf(unit: string): number {
  const i = LAYERS.findIndex((l) => l.folders.includes(unit));
  return i < 0 ? -1 : i;
}

/** Relative import specifiers of a TypeScript source (static, dynamic and `export … from`). */
export function importsOf(source: string): string[] {
  const out: string[] = [];
  const re =
    /(?:import|export)\s[^'"]*?from\s*["']([^"']+)["']|import\s*\(\s*["']([^"']+)["']\s*\)|import\s+["']([^"']+)["']/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(source)) !== null) {
    const spec = m[1] ?? m[2] ?? m[3];
    if (spec.startsWith(".")) out.push(spec);
  }
  return out;
}

function resolve(fromFile: string, spec: string): string {
  const parts = fromFile.split("/").slice(0, -1);
  for (const seg of spec.split("/")) {
    if (seg === "." || seg === "") continue;
    if (seg === "..") parts.pop();
    else parts.push(seg);
  }
  return parts.join("/");
}

function folderOf(path: string): string {
  return path.includes("/") ? path.slice(0, path.lastIndexOf("/")) : ".";
}

/** Checks a set of files (`path → source`, paths relative to the repository root). */
export function checkLayers(files: Map<string, string>): Violation[] {
  const violations: Violation[] = [];
  const edges = new Map<string, Set<string>>();
  for (const [from, source] of files) {
    const fromUnit = unitOf(from);
    if (fromUnit === null) continue;
    for (const spec of importsOf(source)) {
      const to = resolve(from, spec);
      const toUnit = unitOf(to);
      if (toUnit === null) {
        violations.push({ from, to, rule: "product code imports test or tool code" });
        continue;
      }
      const base = to.slice(to.lastIndexOf("/") + 1);
      if (base.startsWith("_") && folderOf(to) !== folderOf(from)) {
        violations.push({ from, to, rule: "private file imported from another folder" });
      }
      if (toUnit === fromUnit) continue;
      const [rf, rt] = [rankOf(fromUnit), rankOf(toUnit)];
      if (rf < 0 || rt < 0) {
        violations.push({
          from,
          to,
          rule: `${rf < 0 ? fromUnit : toUnit} is not in the layer table`,
        });
      } else if (rt < rf) {
        violations.push({ from, to, rule: `${fromUnit} imports ${toUnit}, a layer above it` });
      } else if (fromUnit === "agent" && !AGENT_MAY_IMPORT.has(toUnit)) {
        violations.push({ from, to, rule: "the agent imports only protocol/ and mux/" });
      }
      if (!edges.has(fromUnit)) edges.set(fromUnit, new Set());
      edges.get(fromUnit)!.add(toUnit);
    }
  }
  for (const cycle of findCycles(edges)) {
    violations.push({ from: cycle[0], to: cycle[1], rule: `folder cycle ${cycle.join(" → ")}` });
  }
  return violations;
}

/** Every elementary cycle's first appearance in a depth-first walk (enough to report one per loop). */
export function findCycles(edges: Map<string, Set<string>>): string[][] {
  const cycles: string[][] = [];
  const state = new Map<string, "open" | "done">();
  const path: string[] = [];
  const visit = (u: string) => {
    state.set(u, "open");
    path.push(u);
    for (const v of edges.get(u) ?? []) {
      if (state.get(v) === "open") cycles.push([...path.slice(path.indexOf(v)), v]);
      else if (!state.has(v)) visit(v);
    }
    path.pop();
    state.set(u, "done");
  };
  for (const u of [...edges.keys()].sort()) if (!state.has(u)) visit(u);
  return cycles;
}

async function readProduct(root: string): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  const walk = async (dir: string) => {
    for await (const e of Deno.readDir(`${root}/${dir}`)) {
      const path = `${dir}/${e.name}`;
      if (e.isDirectory) await walk(path);
      else if (/\.ts$/.test(e.name) && !/[_.]test\.ts$/.test(e.name)) {
        files.set(path, await Deno.readTextFile(`${root}/${path}`));
      }
    }
  };
  await walk("src");
  for (const entry of ["main.ts", "agent.ts"]) {
    files.set(entry, await Deno.readTextFile(`${root}/${entry}`));
  }
  return files;
}

if (import.meta.main) {
  const root = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
  const violations = checkLayers(await readProduct(root));
  console.log("layer  folders (may import from the same or a lower layer)");
  LAYERS.forEach((l, i) => console.log(`${i}  ${l.name.padEnd(18)} ${l.folders.join(", ")}`));
  console.log("the agent imports only: " + [...AGENT_MAY_IMPORT].join(", "));
  for (const v of violations) console.log(`error: ${v.from} → ${v.to}: ${v.rule}`);
  console.log(violations.length === 0 ? "layers: ok" : `layers: ${violations.length} violation(s)`);
  if (violations.length > 0) Deno.exit(1);
}
