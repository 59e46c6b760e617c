"""`cargo xtask oauth`, built-in phase: the official MCP Python SDK client, unmodified, against
mcp-proxy's own authorization server (`--oauth-issuer builtin`). One step per run, its client
state (registration, tokens) kept in a file between runs as a real client keeps it, so the
xtask can restart the proxy or switch instances between steps.

Usage: python python_builtin.py STEP BASE DIR [CIMD_BASE]
  signin  401 and the resource metadata, AS metadata, dynamic registration (a confidential
          client: client_secret_post), the proxy's login and consent pages (a scripted
          browser), tokens, whoami and echo on alpha; a refresh once the access token has
          expired; the alpha token refused on beta. Saves DIR/python-client.json.
  resume  with DIR/python-client.json: the stored access token works as it is, the refresh
          token still refreshes, and the registered client (and its secret) still signs in.
  cimd    a client metadata document as client id (CIMD_BASE/python-client.json).
DIR/passphrase holds the passphrase. Prints PASS/FAIL per check; exits 1 on a failure.
"""

import asyncio
import json
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urljoin, urlparse

import httpx2
from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthMetadata,
    OAuthToken,
)

REDIRECT = "http://127.0.0.1:9/callback"


def check(name, ok, detail):
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
    if not ok:
        sys.exit(1)


class Forms(HTMLParser):
    """The forms of a page: method, action, and their inputs and buttons in document order."""

    def __init__(self):
        super().__init__()
        self.forms = []

    def handle_starttag(self, tag, attrs):
        attrs = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"method": attrs.get("method", "get").lower(), "action": attrs.get("action", ""), "controls": []})
        elif tag in ("input", "button") and self.forms:
            default = "submit" if tag == "button" else "text"
            self.forms[-1]["controls"].append({**attrs, "type": attrs.get("type", default).lower()})


async def browse(url, passphrase):
    """A scripted browser at the proxy's pages: reads each page's form as a browser does (every
    named input, the CSRF token included, and the one button pressed), fills the passphrase,
    presses Allow, keeps the cookies; returns the callback URL and the pages passed."""
    pages = []
    async with httpx2.AsyncClient(follow_redirects=False, timeout=30) as http:
        method, body = "GET", None
        for _ in range(10):
            headers = {"accept": "text/html"}
            if body is not None:
                headers["content-type"] = "application/x-www-form-urlencoded"
            res = await http.request(method, url, content=body, headers=headers)
            method, body = "GET", None
            location = res.headers.get("location")
            if location and 300 <= res.status_code < 400:
                url = urljoin(str(res.url), location)
                if url.startswith(REDIRECT):
                    return url, pages
                continue
            parser = Forms()
            parser.feed(res.text)
            if res.status_code != 200 or not parser.forms:
                raise RuntimeError(f"page {res.status_code} at {urlparse(url).path} without a form: {res.text[:300]}")
            form = parser.forms[0]
            submits = [c for c in form["controls"] if c["type"] == "submit"]
            password = next((c["name"] for c in form["controls"] if c["type"] == "password"), None)
            if password:
                pages.append("login")
                press = submits[0] if submits else None
            else:
                pages.append("consent")
                press = next((c for c in submits if "allow" in c.get("value", "").lower()), None)
            if press is None:
                raise RuntimeError(f"no button to press on the {pages[-1]} page")
            fields = []
            for c in form["controls"]:
                if not c.get("name") or c["type"] in ("submit", "button", "reset"):
                    continue
                value = passphrase if c["name"] == password else c.get("value", "")
                fields.append((c["name"], value))
            if press.get("name"):
                fields.append((press["name"], press.get("value", "")))
            url = urljoin(url, form["action"] or url)
            method = form["method"].upper()
            if method == "GET":
                url = f"{url.split('?')[0]}?{urlencode(fields)}"
            else:
                body = urlencode(fields)
        raise RuntimeError("too many pages or redirects")


class FileStorage(TokenStorage):
    """The SDK's token storage, kept in a file (when `path` is set) as a real client keeps it.

    It keeps the authorization server's metadata too: mcp 2.3.0 restores tokens and the client
    from storage but not the metadata, and a refresh before any 401 then goes to `{origin}/token`
    (modelcontextprotocol/python-sdk#3240, #1318). Clients keep the metadata and give it back to
    the provider, as the fix proposed there (#2492) would."""

    def __init__(self, path=None, client=None, tokens=None, metadata=None):
        self.path, self.client, self.tokens, self.metadata, self.saved = path, client, tokens, metadata, 0

    @classmethod
    def load(cls, path):
        data = json.loads(Path(path).read_text())
        return cls(
            path,
            OAuthClientInformationFull.model_validate(data["client"]),
            OAuthToken.model_validate(data["tokens"]),
            OAuthMetadata.model_validate(data["metadata"]),
        )

    def persist(self):
        if self.path and self.client and self.tokens and self.metadata:
            data = {
                "client": self.client.model_dump(mode="json", exclude_none=True),
                "tokens": self.tokens.model_dump(mode="json"),
                "metadata": self.metadata.model_dump(mode="json", exclude_none=True),
            }
            Path(self.path).write_text(json.dumps(data))

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens, self.saved = tokens, self.saved + 1
        self.persist()

    async def get_client_info(self):
        return self.client

    async def set_client_info(self, client_info):
        self.client = client_info
        self.persist()


class Run:
    """One step's SDK client: its provider, and the requests it made (method, path, status)."""

    def __init__(self, base, passphrase, storage, metadata_url=None, pages="login,consent"):
        self.base, self.alpha = base, f"{base}/servers/alpha/mcp"
        self.storage, self.log, self.passphrase, self.expect_pages = storage, [], passphrase, pages
        self.pending = {}
        self.auth = OAuthClientProvider(
            server_url=self.alpha,
            client_metadata=OAuthClientMetadata(
                client_name="xtask-builtin-python",
                redirect_uris=[REDIRECT],
                grant_types=["authorization_code", "refresh_token"],
                response_types=["code"],
                token_endpoint_auth_method="none" if metadata_url else "client_secret_post",
            ),
            storage=storage,
            redirect_handler=self.redirect_handler,
            callback_handler=self.callback_handler,
            client_metadata_url=metadata_url,
        )
        self.auth.context.oauth_metadata = storage.metadata

    def paths(self):
        return [f"{m} {p} {s}" for m, p, s, _ in self.log]

    async def record(self, response):
        # What the SDK discovered, kept with the tokens (see FileStorage).
        if self.auth.context.oauth_metadata is not None and self.storage.metadata is None:
            self.storage.metadata = self.auth.context.oauth_metadata
            self.storage.persist()
        request = response.request
        self.log.append((request.method, request.url.path, response.status_code, response.headers.get("www-authenticate", "")))

    async def redirect_handler(self, url):
        self.pending["url"] = url

    async def callback_handler(self):
        url = self.pending["url"]
        query = parse_qs(urlparse(url).query)
        check(
            "authorization request at the proxy",
            url.startswith(f"{self.base}/oauth/authorize?") and query.get("resource") == [self.alpha]
            and query.get("code_challenge_method") == ["S256"],
            f"resource={query.get('resource')}",
        )
        callback, pages = await browse(url, self.passphrase)
        back = parse_qs(urlparse(callback).query)
        pages_text = self.expect_pages.replace(",", " and ")
        check(
            f"the {pages_text} page{'s' if ',' in self.expect_pages else ''}, posted as a browser posts them",
            ",".join(pages) == self.expect_pages and back.get("iss") == [self.base] and "code" in back,
            f"pages {', '.join(pages)}; back with code and iss={back.get('iss', [None])[0]}",
        )
        return AuthorizationCodeResult(code=back["code"][0], state=back.get("state", [None])[0], iss=back["iss"][0])

    def session(self):
        """An HTTP client with the SDK's auth, recording every response."""
        return httpx2.AsyncClient(auth=self.auth, timeout=30, event_hooks={"response": [self.record]})

    async def whoami(self, session):
        result = await session.call_tool("whoami", {})
        return json.loads(result.content[0].text)

    def expire(self):
        """The clock moves past the access token's expiry, as the SDK computed it (or, for
        tokens loaded from storage, for which it computed none)."""
        self.auth.context.token_expiry_time = time.time() - 1

    def check_sign_in(self, registers):
        paths = self.paths()
        first = self.log[0]
        check("401 first", first[2] == 401, paths[0])
        check(
            "401 names the resource metadata",
            f'resource_metadata="{self.base}/.well-known/oauth-protected-resource/servers/alpha/mcp"' in first[3],
            first[3],
        )
        check(
            "discovery: resource metadata, then authorization server metadata",
            "GET /.well-known/oauth-protected-resource/servers/alpha/mcp 200" in paths
            and "GET /.well-known/oauth-authorization-server 200" in paths,
            ", ".join(paths),
        )
        registered = "POST /oauth/register 201" in paths
        check("registration as expected", registered == registers, f"registered: {registered}")
        tokens = self.storage.tokens
        check("tokens", tokens is not None and tokens.refresh_token is not None, f"expires_in {tokens and tokens.expires_in}")

    async def refresh(self, session, label):
        before = self.storage.tokens
        self.expire()
        mark = len(self.log)
        who = await self.whoami(session)
        paths = self.paths()[mark:]
        after = self.storage.tokens
        check(
            f"{label}: the SDK refreshes an expired token",
            paths[0] == "POST /oauth/token 200" and after.access_token != before.access_token
            and after.refresh_token != before.refresh_token and "/oauth/authorize" not in " ".join(paths),
            ", ".join(paths),
        )
        check(f"{label}: whoami with the refreshed token", who.get("subject") == "owner", json.dumps(who))


async def refused(base, token):
    async with httpx2.AsyncClient(timeout=30) as http:
        res = await http.post(
            f"{base}/servers/beta/mcp",
            headers={"authorization": f"Bearer {token}", "accept": "application/json, text/event-stream"},
            json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "x", "version": "0"}}},
        )
    challenge = res.headers.get("www-authenticate", "")
    check(
        "the alpha token refused on beta",
        res.status_code == 401 and 'error="invalid_token"' in challenge
        and f'resource_metadata="{base}/.well-known/oauth-protected-resource/servers/beta/mcp"' in challenge,
        f"{res.status_code} {challenge}",
    )


async def sign_in_and_call(run, registers, expected_client_id=None, then=None):
    """Connects (401, discovery, registration or not, the pages, tokens), calls whoami and echo,
    then `then(session)`."""
    async with run.session() as http:
        async with streamable_http_client(run.alpha, http_client=http) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                run.check_sign_in(registers)
                client_id = run.storage.client.client_id
                if expected_client_id is not None:
                    check("the client id is the metadata document URL", client_id == expected_client_id, client_id)
                who = await run.whoami(session)
                check(
                    "tools/call whoami on alpha",
                    who.get("subject") == "owner" and who.get("issuer") == run.base and who.get("client_id") == client_id
                    and "mcp:tools" in who.get("scopes", []),
                    json.dumps(who),
                )
                echo = await session.call_tool("echo", {"text": "through the built-in server", "uppercase": True})
                check("tools/call echo on alpha", echo.content[0].text == "THROUGH THE BUILT-IN SERVER", echo.content[0].text)
                if then is not None:
                    await then(session)


async def main(step, base, folder, cimd_base=None):
    passphrase = Path(folder, "passphrase").read_text().strip()
    state = Path(folder, "python-client.json")
    if step == "signin":
        run = Run(base, passphrase, FileStorage(state))

        async def refresh(session):
            check("a confidential client (client_secret_post) got a secret", bool(run.storage.client.client_secret), "yes")
            await run.refresh(session, "refresh")

        await sign_in_and_call(run, registers=True, then=refresh)
        await refused(base, run.storage.tokens.access_token)
    elif step == "resume":
        storage = FileStorage.load(state)
        stored = storage.tokens.access_token
        run = Run(base, passphrase, storage)
        async with run.session() as http:
            async with streamable_http_client(run.alpha, http_client=http) as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    await session.initialize()
                    who = await run.whoami(session)
                    check(
                        "the stored access token works as it is",
                        storage.saved == 0 and storage.tokens.access_token == stored
                        and not any(s == 401 for _, _, s, _ in run.log) and who.get("subject") == "owner",
                        json.dumps(who),
                    )
                    await run.refresh(session, "resume")
        # The registered client (and its secret) still signs in: a client that kept its
        # registration but lost its tokens; no registration, the consent remembered.
        again = Run(base, passphrase, FileStorage(client=storage.client), pages="login")
        await sign_in_and_call(again, registers=False)
        check(
            "the registered client is still known (same client id, its secret accepted)",
            again.storage.client.client_id == storage.client.client_id, f"client_id {storage.client.client_id[:6]}…",
        )
    elif step == "cimd":
        url = f"{cimd_base}/python-client.json"
        run = Run(base, passphrase, FileStorage(), metadata_url=url)
        await sign_in_and_call(run, registers=False, expected_client_id=url)
    else:
        check("step", False, f"unknown step {step}")


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(*sys.argv[1:]), 60))
