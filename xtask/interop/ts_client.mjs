// Interop check: the official MCP TypeScript SDK, unmodified, against a Streamable HTTP endpoint.
//
// Usage: node ts_client.mjs URL        (URL ends in /mcp)
// ES modules resolve packages next to the script (NODE_PATH does not apply), so the script must
// sit in a folder whose node_modules holds @modelcontextprotocol/sdk: xtask copies it there.
//
// Runs initialize, tools/list (expects get_time, calculator, echo) and tools/call echo with
// uppercase, printing one PASS or FAIL line per check; exits 1 on the first failure.
// `cargo xtask interop` runs it against mcp-proxy with a reverse server behind it.

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const EXPECTED_TOOLS = ["get_time", "calculator", "echo"];
const EXPECTED_ECHO = "HELLO FROM REVERSE PROXY!";

class CheckFailed extends Error {}

function check(name, started, ok, detail = "") {
  const ms = Math.round(performance.now() - started);
  console.log(`${ok ? "PASS" : "FAIL"} ${name} (${ms} ms)${detail ? ": " + detail : ""}`);
  if (!ok) throw new CheckFailed(name);
}

async function run(url) {
  const transport = new StreamableHTTPClientTransport(new URL(url));
  const client = new Client({ name: "interop-ts", version: "1.0.0" });
  try {
    let t = performance.now();
    // connect() runs initialize and sends notifications/initialized.
    await client.connect(transport);
    const info = client.getServerVersion();
    check("initialize", t, Boolean(info?.name),
      `${info?.name} ${info?.version}, protocol ${transport.protocolVersion ?? "?"}`);

    t = performance.now();
    const { tools } = await client.listTools();
    const names = tools.map((tool) => tool.name).sort();
    check("tools/list", t, EXPECTED_TOOLS.every((n) => names.includes(n)), names.join(", "));

    t = performance.now();
    const result = await client.callTool({
      name: "echo",
      arguments: { text: "Hello from reverse proxy!", uppercase: true },
    });
    const text = result.content.map((block) => block.text ?? "").join("");
    check("tools/call echo", t, text === EXPECTED_ECHO && !result.isError, JSON.stringify(text));

    // Ends the session with DELETE, as a well-behaved client does.
    await transport.terminateSession();
  } finally {
    await client.close();
  }
}

const url = process.argv[2];
if (!url) {
  console.error("usage: node ts_client.mjs URL");
  process.exit(2);
}
const deadline = setTimeout(() => {
  console.log("FAIL timed out after 60 s");
  process.exit(1);
}, 60_000);
try {
  await run(url);
  clearTimeout(deadline);
} catch (e) {
  if (!(e instanceof CheckFailed)) console.log(`FAIL ${e?.name ?? "error"}: ${e?.message ?? e}`);
  process.exit(1);
}
