"""Interop check: the official MCP Python SDK, unmodified, against a Streamable HTTP endpoint.

Usage: python python_client.py URL        (URL ends in /mcp)

Runs initialize, tools/list (expects get_time, calculator, echo) and tools/call echo with
uppercase, printing one PASS or FAIL line per check; exits 1 on the first failure.
`cargo xtask interop` runs it against mcp-proxy with a reverse server behind it.
"""

import sys
import time

from mcp import ClientSession

from checks import check, main

try:  # mcp >= 1.2x names it streamable_http_client; older releases streamablehttp_client.
    from mcp.client.streamable_http import streamable_http_client as connect
except ImportError:  # pragma: no cover - depends on the pinned SDK
    from mcp.client.streamable_http import streamablehttp_client as connect

EXPECTED_TOOLS = {"get_time", "calculator", "echo"}
EXPECTED_ECHO = "HELLO FROM REVERSE PROXY!"


def field(obj, snake, camel):
    """mcp 2.x names fields in snake_case, 1.x in camelCase."""
    return getattr(obj, snake, None) if hasattr(obj, snake) else getattr(obj, camel)


async def run(url):
    async with connect(url) as streams:
        # 1.x yields (read, write, get_session_id); 2.x yields (read, write).
        read, write = streams[0], streams[1]
        async with ClientSession(read, write) as session:
            t = time.monotonic()
            init = await session.initialize()
            info = field(init, "server_info", "serverInfo")
            version = field(init, "protocol_version", "protocolVersion")
            check("initialize", t, bool(info.name), f"{info.name} {info.version}, protocol {version}")

            t = time.monotonic()
            tools = await session.list_tools()
            names = {tool.name for tool in tools.tools}
            check("tools/list", t, EXPECTED_TOOLS <= names, ", ".join(sorted(names)))

            t = time.monotonic()
            result = await session.call_tool(
                "echo", {"text": "Hello from reverse proxy!", "uppercase": True})
            text = "".join(getattr(block, "text", "") for block in result.content)
            check("tools/call echo", t, text == EXPECTED_ECHO and not field(result, "is_error", "isError"), repr(text))


if __name__ == "__main__":
    sys.exit(main(run, __doc__))
