"""Interop check: the official MCP Python SDK, unmodified, taking talk-back from a tool.

Usage: python python_client_talkback.py URL   (URL ends in /mcp; a server with the test tools)

Against reverse_server_example --test-tools behind the proxy:
1. tools/call `progress` with a progress callback: the callback sees every step, and the
   logging callback the tool's log line, before the answer.
2. tools/call `sample` with a sampling callback: the server's `sampling/createMessage` reaches
   the callback through the proxy, and the tool answers with the text the callback returned.

Prints one PASS or FAIL line per check; exits 1 on the first failure. `cargo xtask interop`
runs it against mcp-proxy with reverse_server_example --test-tools behind it.
"""

import sys
import time

from mcp import ClientSession, types

from checks import check, main

try:  # mcp >= 1.2x names it streamable_http_client; older releases streamablehttp_client.
    from mcp.client.streamable_http import streamable_http_client as connect
except ImportError:  # pragma: no cover - depends on the pinned SDK
    from mcp.client.streamable_http import streamablehttp_client as connect

STEPS = 3
PROMPT = "What is 6 x 7?"
MODEL_TEXT = "42, said the Python SDK's sampling callback"


def text_of(result):
    return "".join(getattr(block, "text", "") for block in result.content)


async def run(url):
    logs = []
    prompts = []

    async def on_log(params):
        logs.append(params.data)

    async def on_sampling(context, params):
        prompts.append("".join(getattr(m.content, "text", "") for m in params.messages))
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=MODEL_TEXT),
            model="interop-callback",
        )

    async with connect(url) as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write, sampling_callback=on_sampling,
                                 logging_callback=on_log) as session:
            await session.initialize()

            progress = []

            async def on_progress(value, total, message):
                progress.append((value, total, message))

            t = time.monotonic()
            result = await session.call_tool("progress", {"steps": STEPS},
                                             progress_callback=on_progress)
            text = text_of(result)
            got = [value for value, _, _ in progress]
            check("tools/call progress: progress callback", t,
                  text == f"done after {STEPS} steps" and got == [float(n) for n in range(1, STEPS + 1)],
                  f"{text!r}, progress {progress}")
            check("tools/call progress: logging callback", t,
                  "progress tool working" in logs, repr(logs))

            t = time.monotonic()
            result = await session.call_tool("sample", {"prompt": PROMPT})
            text = text_of(result)
            is_error = getattr(result, "is_error", None) or getattr(result, "isError", False)
            check("tools/call sample: sampling callback answered", t,
                  text == MODEL_TEXT and not is_error and prompts == [PROMPT],
                  f"{text!r}, callback asked {prompts!r}")


if __name__ == "__main__":
    sys.exit(main(run, __doc__))
