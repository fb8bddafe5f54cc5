/**
 * `deno run -A scripts/krew.ts VERSION SHA256SUMS > relay.yaml`: renders plugins/relay.yaml
 * with the version and each archive's sha256 from a `sha256sum` listing.
 */
import { TARGETS } from "./targets.ts";

/** Fills the template's placeholders; throws if an archive's checksum is missing. */
export function renderKrew(template: string, version: string, sums: string): string {
  const byFile = new Map(
    sums.split("\n").map((l) => l.trim().split(/\s+\*?/)).filter((p) => p.length === 2).map((
      [h, f],
    ) => [f, h]),
  );
  let out = template.replaceAll("{{VERSION}}", version.replace(/^v/, ""));
  for (const t of TARGETS) {
    const file = `kubectl-relay-${t.os}-${t.arch}.${t.os === "windows" ? "zip" : "tar.gz"}`;
    const sum = byFile.get(file);
    if (!sum) throw new Error(`no checksum for ${file}`);
    out = out.replaceAll(`{{SHA256_${t.os}_${t.arch}}}`, sum);
  }
  if (out.includes("{{")) throw new Error("unrendered placeholder left in the krew manifest");
  return out;
}

if (import.meta.main) {
  const [version, sumsFile] = Deno.args;
  const template = await Deno.readTextFile(new URL("../plugins/relay.yaml", import.meta.url));
  console.log(renderKrew(template, version, await Deno.readTextFile(sumsFile)));
}
