"""`cargo xtask oauth`: the official MCP Python SDK client, unmodified, completes the MCP
authorization flow against mcp-proxy with oidc-provider as the identity provider (401 and
resource metadata, dynamic client registration, authorization code + PKCE with the pool's
resource indicator; login and consent scripted with plain form posts), then calls a tool.

Usage: python python_oauth.py PROXY_URL   Prints PASS/FAIL per check; exits 1 on a failure.
"""

import asyncio
import json
import re
import sys
from urllib.parse import parse_qs, urljoin, urlparse

import httpx2
from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

REDIRECT = "http://127.0.0.1:9/callback"


def check(name, ok, detail):
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
    if not ok:
        sys.exit(1)


class Memory(TokenStorage):
    def __init__(self):
        self.tokens = None
        self.client = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client

    async def set_client_info(self, client_info):
        self.client = client_info


async def authorize(url, user):
    """Follows the authorization URL, posting oidc-provider's login and consent forms."""
    async with httpx2.AsyncClient(follow_redirects=False) as http:
        method, data = "GET", None
        for _ in range(20):
            res = await http.request(method, url, data=data)
            method, data = "GET", None
            location = res.headers.get("location")
            if location:
                url = urljoin(str(res.url), location)
                if url.startswith(REDIRECT):
                    query = parse_qs(urlparse(url).query)
                    return AuthorizationCodeResult(
                        code=query["code"][0],
                        state=query.get("state", [None])[0],
                        iss=query.get("iss", [None])[0],
                    )
                continue
            match = re.search(r'name="prompt" value="(\w+)"', res.text)
            if res.status_code != 200 or not match:
                raise RuntimeError(f"unexpected page {res.status_code} at {url}: {res.text[:300]}")
            prompt = match.group(1)
            method = "POST"
            data = {"prompt": prompt, "login": user, "password": "any"} if prompt == "login" else {"prompt": prompt}
        raise RuntimeError("too many redirects")


async def run(base):
    alpha = f"{base}/servers/alpha/mcp"
    storage = Memory()
    pending = {}

    async def redirect_handler(url):
        pending["url"] = url
        query = parse_qs(urlparse(url).query)
        check("resource indicator", query.get("resource") == [alpha], f"resource={query.get('resource')}")

    async def callback_handler():
        return await authorize(pending["url"], "py-user")

    auth = OAuthClientProvider(
        server_url=alpha,
        client_metadata=OAuthClientMetadata(
            client_name="xtask-oauth-python",
            redirect_uris=[REDIRECT],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )
    async with httpx2.AsyncClient(auth=auth, timeout=30) as http:
        async with streamable_http_client(alpha, http_client=http) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                check("token", storage.tokens is not None, "authorized by the identity provider")
                result = await session.call_tool("whoami", {})
                who = json.loads(result.content[0].text)
                check(
                    "tools/call whoami",
                    bool(who) and who.get("subject") == "py-user" and "mcp:tools" in who.get("scopes", []),
                    json.dumps(who),
                )
    async with httpx2.AsyncClient(timeout=30) as http:
        res = await http.post(
            f"{base}/servers/beta/mcp",
            headers={
                "authorization": f"Bearer {storage.tokens.access_token}",
                "accept": "application/json, text/event-stream",
            },
            json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "x", "version": "0"}}},
        )
        challenge = res.headers.get("www-authenticate", "")
        check("pool A token refused on pool B", res.status_code == 401 and "invalid_token" in challenge,
              f"{res.status_code} {challenge}")


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(run(sys.argv[1]), 60))
