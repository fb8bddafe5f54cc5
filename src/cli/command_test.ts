import assert from "node:assert/strict";
import { parseCommand } from "./command.ts";
import { UsageError } from "../errors.ts";
import { parsePortSpec } from "../spec/ports.ts";
import { parseTarget } from "../spec/target.ts";
import { parseDuration } from "./duration.ts";

function usageError(fn: () => unknown, re: RegExp): void {
  assert.throws(fn, (e: unknown) => e instanceof UsageError && re.test(e.message));
}

Deno.test("ports: every form of the spec", () => {
  assert.deepEqual(parsePortSpec("8080:80"), {
    local: 8080,
    remote: 80,
    protocol: "tcp",
    text: "8080:80",
  });
  assert.deepEqual(parsePortSpec("8080"), {
    local: 8080,
    remote: 8080,
    protocol: "tcp",
    text: "8080",
  });
  assert.deepEqual(parsePortSpec(":53@udp"), {
    local: 0,
    remote: 53,
    protocol: "udp",
    text: ":53@udp",
  });
  assert.deepEqual(parsePortSpec("8080:http"), {
    local: 8080,
    remote: "http",
    protocol: "tcp",
    text: "8080:http",
  });
  assert.equal(parsePortSpec("5000@TCP").protocol, "tcp");
});

Deno.test("ports: bad values are user errors", () => {
  usageError(() => parsePortSpec("70000"), /out of range/);
  usageError(() => parsePortSpec("0:80"), /out of range/);
  usageError(() => parsePortSpec("80@sctp"), /tcp or udp/);
  usageError(() => parsePortSpec("a:b:c"), /invalid port/);
  usageError(() => parsePortSpec("http"), /needs a local port/);
  usageError(() => parsePortSpec("8080:"), /remote port is empty/);
  usageError(() => parsePortSpec("8080:Bad_Name"), /not a valid port name/);
});

Deno.test("targets: kinds, aliases, bare pod names, IPs and hosts", () => {
  assert.deepEqual(parseTarget("my-pod"), { kind: "pod", name: "my-pod", text: "my-pod" });
  assert.equal(parseTarget("svc/web").kind, "service");
  assert.equal(parseTarget("service/web").kind, "service");
  assert.equal(parseTarget("deploy/web").kind, "deployment");
  assert.equal(parseTarget("sts/db").kind, "statefulset");
  assert.equal(parseTarget("rs/x").kind, "replicaset");
  assert.equal(parseTarget("ds/x").kind, "daemonset");
  assert.equal(parseTarget("job/x").kind, "job");
  assert.deepEqual(parseTarget("ip/1.2.3.4"), { kind: "ip", name: "1.2.3.4", text: "ip/1.2.3.4" });
  assert.equal(parseTarget("ip/[::1]").name, "::1");
  assert.equal(parseTarget("ip/fd00::10").name, "fd00::10");
  assert.equal(parseTarget("host/redis.default").name, "redis.default");
});

Deno.test("targets: bad values are user errors", () => {
  usageError(() => parseTarget("cm/x"), /doesn't have a resource type "cm"/);
  usageError(() => parseTarget("ip/1.2.3.256"), /invalid IP address/);
  usageError(() => parseTarget("ip/::1::2"), /invalid IP address/);
  usageError(() => parseTarget("host/bad..name"), /invalid hostname/);
  usageError(() => parseTarget("host/-x.example"), /invalid hostname/);
  usageError(() => parseTarget(`host/${"a".repeat(64)}.com`), /invalid hostname/);
  usageError(() => parseTarget("svc/Web"), /invalid service name/);
  usageError(() => parseTarget("pod/"), /resource and name/);
});

Deno.test("command line: flags anywhere, kubectl forms, defaults", () => {
  const c = parseCommand([
    "-n",
    "kube-system",
    "deploy/kube-dns",
    ":53@udp",
    "--v=3",
    "--address=localhost",
  ]);
  assert.equal(c.kind, "forward");
  assert.equal(c.flags.namespace, "kube-system");
  assert.equal(c.flags.verbosity, 3);
  assert.equal(c.flags.serverNamespace, undefined, "default decided with the patch");
  assert.equal(c.flags.podRunningTimeoutMs, 60_000);
  assert.deepEqual(c.requests[0].addresses, ["127.0.0.1", "::1"]);
  assert.equal(c.requests[0].target.kind, "deployment");
  const d = parseCommand([
    "--server.namespace",
    "kube-public",
    "ip/1.2.3.4",
    "5000",
    "--request-timeout",
    "5s",
  ]);
  assert.equal(d.flags.serverNamespace, "kube-public");
  assert.equal(d.flags.requestTimeoutMs, 5000);
  assert.deepEqual(d.requests[0].addresses, ["127.0.0.1"]);
  assert.equal(parseCommand(["-V"]).kind, "version");
  assert.equal(parseCommand(["-h"]).kind, "help");
  assert.equal(parseCommand(["proxy", "--port", "1081"]).kind, "proxy");
});

Deno.test("command line: errors read like kubectl's", () => {
  usageError(() => parseCommand(["--bogus", "pod/x", "80"]), /^unknown flag: --bogus$/);
  usageError(() => parseCommand(["-Z", "pod/x", "80"]), /unknown shorthand flag: 'Z'/);
  usageError(() => parseCommand(["pod/x"]), /at least 1 PORT is required/);
  usageError(() => parseCommand([]), /TYPE\/NAME and list of ports are required/);
  usageError(() => parseCommand(["--address", "nowhere", "pod/x", "80"]), /not a valid IP address/);
  usageError(
    () => parseCommand(["--pod-running-timeout", "soon", "pod/x", "80"]),
    /invalid duration/,
  );
  usageError(() => parseCommand(["pod/x", "80", "-n"]), /flag needs an argument: -n/);
});

Deno.test("-f file: one target per line, per-line -n and -l, comments", () => {
  const file = `# targets
-n team-a svc/x 10053:53@udp
-l 0.0.0.0 pod/y 8080   # all interfaces

ip/10.0.0.1 5000@tcp 6000@udp
`;
  const c = parseCommand(["-f", "t.txt", "-n", "base"], () => file);
  assert.equal(c.requests.length, 3);
  assert.equal(c.requests[0].namespace, "team-a");
  assert.deepEqual(c.requests[0].ports.map((p) => p.protocol), ["udp"]);
  assert.equal(c.requests[1].namespace, "base");
  assert.deepEqual(c.requests[1].addresses, ["0.0.0.0"]);
  assert.deepEqual(c.requests[2].addresses, ["127.0.0.1"]);
  assert.equal(c.requests[2].ports.length, 2);
  usageError(() => parseCommand(["-f", "t.txt"], () => "pod/y\n"), /at least 1 PORT.*t\.txt:1/);
  usageError(
    () => parseCommand(["-f", "t.txt"], () => "--server.image x pod/y 80\n"),
    /unknown flag.*t\.txt:1/,
  );
  usageError(() =>
    parseCommand(["-f", "nope.txt"], () => {
      throw new Error("No such file");
    }), /cannot read nope\.txt/);
});

Deno.test("durations", () => {
  assert.equal(parseDuration("1m", "--x"), 60_000);
  assert.equal(parseDuration("1m30s", "--x"), 90_000);
  assert.equal(parseDuration("500ms", "--x"), 500);
  assert.equal(parseDuration("5", "--x"), 5000);
  usageError(() => parseDuration("5 minutes", "--x"), /invalid duration/);
});

Deno.test("command line: krelay's forms (-l on forward and proxy, -V, -v N, --rm)", () => {
  const f = parseCommand(["-l", "0.0.0.0", "pod/x", "80", "-v", "4"]);
  assert.deepEqual(f.requests[0].addresses, ["0.0.0.0"]);
  assert.equal(f.flags.verbosity, 4);
  assert.equal(parseCommand(["-v=2", "pod/x", "80"]).flags.verbosity, 2);
  assert.equal(parseCommand(["--version"]).kind, "version");
  const p = parseCommand(["proxy", "-l", "127.0.0.1:0"]);
  assert.equal(p.kind, "proxy");
  assert.deepEqual(p.flags.address, ["127.0.0.1"]);
  assert.equal(p.flags.port, 0);
  assert.equal(parseCommand(["proxy", "--listen=[::1]:1081"]).flags.port, 1081);
  assert.deepEqual(parseCommand(["proxy", "--listen", ":1080"]).flags.address, ["0.0.0.0"]);
  const d = parseCommand(["proxy"]);
  assert.equal(d.flags.address, undefined);
  assert.equal(d.flags.port, undefined);
  const rm = parseCommand(["--rm", "pod/x", "80"]);
  assert.match(rm.warnings[0], /^Flag --rm has been deprecated/);
  assert.equal(parseCommand(["--direct", "pod/x", "80"]).flags.direct, true);
});

Deno.test("command line: krelay flags we do not support name what to use instead", () => {
  usageError(
    () => parseCommand(["--server.pull-policy", "Always", "pod/x", "80"]),
    /^flag --server\.pull-policy is not supported by kubectl relay: set it with --patch/,
  );
  usageError(
    () => parseCommand(["--log_dir=/tmp", "pod/x", "80"]),
    /^flag --log_dir is not supported by kubectl relay: .*use -v N/,
  );
  usageError(() => parseCommand(["--derp-map-url", "x", "pod/x", "80"]), /no DERP relay/);
  usageError(() => parseCommand(["--listen", "1.2.3.4:1", "pod/x", "80"]), /proxy.*--address/);
  usageError(() => parseCommand(["proxy", "-l", "127.0.0.1"]), /expected HOST:PORT/);
  usageError(() => parseCommand(["proxy", "-l", ":1", "--port", "2"]), /not both/);
  usageError(() => parseCommand(["proxy", "--direct"]), /proxy needs the agent/);
});
