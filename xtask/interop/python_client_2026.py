"""Interop check: the official MCP Python SDK's `Client`, unmodified, in its 2026-07-28 modes.

Usage: python python_client_2026.py URL        (URL ends in /mcp; a server that speaks 2026-07-28)

1. mode="auto" (the SDK's default): probes `server/discover`, adopts 2026-07-28, then tools/list
   and tools/call echo without a session.
2. mode="2026-07-28": the same without the probe.
3. mode="auto" against a pool whose only member does not speak 2026-07-28 (a legacy
   registration this script serves itself, named `py-legacy`): the proxy refuses the probe at
   once, the client falls back to `initialize` and the same calls work over a session.

Prints one PASS or FAIL line per check; exits 1 on the first failure. `cargo xtask interop`
runs it against mcp-proxy with reverse_server_example behind it.
"""

import asyncio
import json
import sys
import threading
import time
import urllib.error
import urllib.request

from mcp.client.client import Client

from checks import check, main

EXPECTED_TOOLS = {"get_time", "calculator", "echo"}
EXPECTED_ECHO = "HELLO FROM REVERSE PROXY!"
MODERN = "2026-07-28"
LEGACY_POOL = "py-legacy"
# The probe's own timeout is 10 s; a fast refusal keeps the whole connect far below it.
FAST_FALLBACK_SECONDS = 3.0


async def calls(label, client):
    """tools/list and tools/call echo, as python_client.py checks them."""
    t = time.monotonic()
    tools = await client.list_tools()
    names = {tool.name for tool in tools.tools}
    check(f"{label}: tools/list", t, EXPECTED_TOOLS <= names, ", ".join(sorted(names)))

    t = time.monotonic()
    result = await client.call_tool("echo", {"text": "Hello from reverse proxy!", "uppercase": True})
    text = "".join(getattr(block, "text", "") for block in result.content)
    check(f"{label}: tools/call echo", t, text == EXPECTED_ECHO and not result.is_error, repr(text))


async def modern(url, mode):
    label = f"mode={mode}"
    t = time.monotonic()
    async with Client(url, mode=mode) as client:
        version = client.protocol_version
        check(f"{label}: connect", t, version == MODERN, f"protocol {version}")
        await calls(label, client)


class LegacyServer:
    """A legacy registration (no capabilities, as the seed's reverse client makes) in pool
    `py-legacy`, serving initialize, tools/list and tools/call echo from a polling thread."""

    def __init__(self, base):
        self.base = base
        self.stop = threading.Event()
        body = self.post("/register", {"type": "mcp_server", "name": LEGACY_POOL})
        self.session = body["session_id"]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def post(self, path, body):
        req = urllib.request.Request(self.base + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"null")

    def serve(self):
        while not self.stop.is_set():
            url = f"{self.base}/poll?session_id={self.session}&timeout=1"
            try:
                with urllib.request.urlopen(url, timeout=10) as resp:
                    if resp.status != 200:
                        continue
                    item = json.loads(resp.read())
            except (urllib.error.URLError, OSError):
                if self.stop.wait(0.2):
                    return
                continue
            request = item["request"]
            self.post(f"/response?session_id={self.session}",
                      {"request_id": item["request_id"], "response": self.answer(request)})

    @staticmethod
    def answer(request):
        if "id" not in request:
            return None
        method, params = request["method"], request.get("params") or {}
        if method == "initialize":
            result = {"protocolVersion": params.get("protocolVersion", "2025-11-25"),
                      "capabilities": {"tools": {}},
                      "serverInfo": {"name": "py-legacy", "version": "1"}}
        elif method == "tools/list":
            schema = {"type": "object", "properties": {"text": {"type": "string"}}}
            result = {"tools": [{"name": n, "inputSchema": schema} for n in sorted(EXPECTED_TOOLS)]}
        elif method == "tools/call":
            args = params.get("arguments") or {}
            text = args.get("text", "")
            result = {"content": [{"type": "text",
                                   "text": text.upper() if args.get("uppercase") else text}]}
        else:
            return {"jsonrpc": "2.0", "id": request["id"],
                    "error": {"code": -32601, "message": f"Method not found: {method}"}}
        return {"jsonrpc": "2.0", "id": request["id"], "result": result}

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)
        req = urllib.request.Request(f"{self.base}/register?session_id={self.session}", method="DELETE")
        try:
            urllib.request.urlopen(req, timeout=10).close()
        except urllib.error.URLError:
            pass


async def fallback(url):
    base = url.rsplit("/mcp", 1)[0]
    server = await asyncio.to_thread(LegacyServer, base)
    try:
        label = "mode=auto, no 2026-07-28 behind the pool"
        t = time.monotonic()
        async with Client(f"{base}/servers/{LEGACY_POOL}/mcp", mode="auto") as client:
            version = client.protocol_version
            fast = time.monotonic() - t < FAST_FALLBACK_SECONDS
            check(f"{label}: connect falls back to initialize", t,
                  version != MODERN and fast, f"protocol {version}")
            await calls(label, client)
    finally:
        await asyncio.to_thread(server.close)


async def run(url):
    await modern(url, "auto")
    await modern(url, MODERN)
    await fallback(url)


if __name__ == "__main__":
    sys.exit(main(run, __doc__))
