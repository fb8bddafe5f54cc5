/**
 * How to run this program again as a child process: a compiled binary runs itself; a source
 * install runs `deno run` on the same main module, with the deno.json beside it when there is one
 * (so the child resolves modules exactly like the parent), or none (an install from a URL).
 */
export function selfCommand(denoFlags: string[], args: string[]): { cmd: string; args: string[] } {
  if (Deno.build.standalone) return { cmd: Deno.execPath(), args };
  const main = Deno.mainModule;
  let config = ["--no-config"];
  if (main.startsWith("file:")) {
    const beside = new URL("./deno.json", main);
    try {
      Deno.statSync(beside);
      config = ["--config", beside.pathname];
    } catch {
      // main.ts without a deno.json beside it
    }
  }
  return {
    cmd: Deno.execPath(),
    args: ["run", "-A", "--quiet", "--no-prompt", ...config, ...denoFlags, main, ...args],
  };
}
