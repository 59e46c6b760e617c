// `cargo xtask oauth`: the official TypeScript SDK client, unmodified, completes the MCP
// authorization flow against mcp-proxy with oidc-provider as the identity provider: 401 and
// the resource metadata, dynamic client registration, authorization code + PKCE with the
// pool's resource indicator (login and consent scripted), then a tool call through the proxy.
//
// Usage: node ts_oauth.mjs PROXY_URL   Prints PASS/FAIL per check; exits 1 on a failure.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { authorize } from './login.mjs';

const base = process.argv[2];
const alpha = new URL(`${base}/servers/alpha/mcp`);
const beta = `${base}/servers/beta/mcp`;
const redirectUri = 'http://127.0.0.1:9/callback';
setTimeout(() => { console.log('FAIL deadline: 60 s passed'); process.exit(1); }, 60_000).unref();

function check(name, ok, detail) {
  console.log(`${ok ? 'PASS' : 'FAIL'} ${name}: ${detail}`);
  if (!ok) process.exit(1);
}

class Provider {
  constructor() { this.store = {}; }
  get redirectUrl() { return redirectUri; }
  get clientMetadata() {
    return { client_name: 'xtask-oauth-ts', redirect_uris: [redirectUri], grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'], token_endpoint_auth_method: 'none' };
  }
  clientInformation() { return this.store.client; }
  saveClientInformation(info) { this.store.client = info; }
  tokens() { return this.store.tokens; }
  saveTokens(tokens) { this.store.tokens = tokens; }
  redirectToAuthorization(url) { this.store.authorizationUrl = url; }
  saveCodeVerifier(v) { this.store.verifier = v; }
  codeVerifier() { return this.store.verifier; }
}

const provider = new Provider();
let transport = new StreamableHTTPClientTransport(alpha, { authProvider: provider });
let client = new Client({ name: 'xtask-oauth-ts', version: '1.0.0' });
try {
  await client.connect(transport);
  check('401 first', false, 'connected without a token');
} catch (e) {
  check('401 first', e instanceof UnauthorizedError && !!provider.store.authorizationUrl,
    `${e.constructor.name} ${e.message}; authorization at ${provider.store.authorizationUrl?.origin}`);
}
const resource = provider.store.authorizationUrl.searchParams.get('resource');
check('resource indicator', resource === alpha.href, `resource=${resource}`);
const callback = await authorize(provider.store.authorizationUrl, redirectUri, 'ts-user');
await transport.finishAuth(callback.searchParams.get('code'));
check('token', !!provider.tokens()?.access_token, `token_type ${provider.tokens()?.token_type}`);

transport = new StreamableHTTPClientTransport(alpha, { authProvider: provider });
client = new Client({ name: 'xtask-oauth-ts', version: '1.0.0' });
await client.connect(transport);
const result = await client.callTool({ name: 'whoami', arguments: {} });
const who = JSON.parse(result.content[0].text);
check('tools/call whoami', who?.subject === 'ts-user' && who.scopes?.includes('mcp:tools') && !!who.client_id,
  JSON.stringify(who));
const echo = await client.callTool({ name: 'echo', arguments: { text: 'through oauth', uppercase: true } });
check('tools/call echo', echo.content[0].text === 'THROUGH OAUTH', JSON.stringify(echo.content[0].text));
await client.close();

const refused = await fetch(beta, {
  method: 'POST',
  headers: { authorization: `Bearer ${provider.tokens().access_token}`, 'content-type': 'application/json',
    accept: 'application/json, text/event-stream' },
  body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize',
    params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'x', version: '0' } } }),
});
const challenge = refused.headers.get('www-authenticate') ?? '';
check('pool A token refused on pool B', refused.status === 401 && challenge.includes('invalid_token'),
  `${refused.status} ${challenge}`);
