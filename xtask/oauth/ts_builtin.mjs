// `cargo xtask oauth`, built-in phase: the official TypeScript SDK client, unmodified, against
// mcp-proxy's own authorization server (`--oauth-issuer builtin`). One step per run, its
// client state (registration, tokens) kept in a file between runs as a real client keeps it,
// so the xtask can restart the proxy or switch instances between steps.
//
// Usage: node ts_builtin.mjs STEP BASE DIR [CIMD_BASE]
//   signin  401 and the resource metadata, AS metadata, dynamic registration, the proxy's
//           login and consent pages (scripted browser), tokens, whoami and echo on alpha;
//           then a refresh (the access token invalidated: 401, the SDK refreshes by itself),
//           and the alpha token refused on beta. Saves DIR/ts-client.json.
//   resume  with DIR/ts-client.json: the stored access token works as it is, the refresh
//           token still refreshes, and the registered client is still known to the proxy.
//   cimd    a client metadata document as client id (CIMD_BASE/ts-client.json): no
//           registration, the pages, tokens, whoami.
// DIR/passphrase holds the passphrase. Prints PASS/FAIL per check; exits 1 on a failure.
import { readFileSync, writeFileSync } from 'node:fs';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { Browser } from './browser.mjs';

const [step, base, dir, cimdBase] = process.argv.slice(2);
const alpha = new URL(`${base}/servers/alpha/mcp`);
const beta = `${base}/servers/beta/mcp`;
const redirectUri = 'http://127.0.0.1:9/callback';
const passphrase = readFileSync(`${dir}/passphrase`, 'utf8').trim();
const stateFile = `${dir}/ts-client.json`;
setTimeout(() => { console.log('FAIL deadline: 60 s passed'); process.exit(1); }, 60_000).unref();

function check(name, ok, detail) {
  console.log(`${ok ? 'PASS' : 'FAIL'} ${name}: ${detail}`);
  if (!ok) process.exit(1);
}

/** The SDK's OAuthClientProvider, its state in memory and (for DCR) in `stateFile`. */
class Provider {
  constructor(store, metadataUrl) {
    this.store = store;
    this.clientMetadataUrl = metadataUrl;
    this.saved = 0;
    this.redirected = 0;
  }
  get redirectUrl() { return redirectUri; }
  get clientMetadata() {
    return { client_name: 'xtask-builtin-ts', redirect_uris: [redirectUri], grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'], token_endpoint_auth_method: 'none' };
  }
  clientInformation() { return this.store.client; }
  saveClientInformation(info) { this.store.client = info; this.persist(); }
  tokens() { return this.store.tokens; }
  saveTokens(tokens) { this.store.tokens = tokens; this.saved += 1; this.persist(); }
  redirectToAuthorization(url) { this.authorizationUrl = url; this.redirected += 1; }
  saveCodeVerifier(v) { this.store.verifier = v; }
  codeVerifier() { return this.store.verifier; }
  persist() { if (!this.clientMetadataUrl) writeFileSync(stateFile, JSON.stringify(this.store)); }
}

/** `fetch` that records what the SDK asks the proxy: method, path, status. */
function recording(log) {
  return async (url, init) => {
    const res = await fetch(url, init);
    log.push({ method: init?.method ?? 'GET', path: new URL(url).pathname, status: res.status,
      challenge: res.headers.get('www-authenticate') });
    return res;
  };
}

const connect = async (provider, log) => {
  const transport = new StreamableHTTPClientTransport(alpha, { authProvider: provider, fetch: recording(log) });
  const client = new Client({ name: 'xtask-builtin-ts', version: '1.0.0' });
  await client.connect(transport);
  return client;
};

async function whoami(client) {
  const result = await client.callTool({ name: 'whoami', arguments: {} });
  return JSON.parse(result.content[0].text);
}

/**
 * The SDK's first connection: 401, discovery, registration (unless the client is known or
 * CIMD), the pages (`pages`: which ones the browser must pass), tokens.
 */
async function signIn(provider, log, pages = 'login,consent') {
  const transport = new StreamableHTTPClientTransport(alpha, { authProvider: provider, fetch: recording(log) });
  try {
    await new Client({ name: 'xtask-builtin-ts', version: '1.0.0' }).connect(transport);
    check('401 first', false, 'connected without a token');
  } catch (e) {
    check('401 first', e instanceof UnauthorizedError && !!provider.authorizationUrl,
      `${e.constructor.name}; then ${log.map((r) => `${r.method} ${r.path} ${r.status}`).join(', ')}`);
  }
  const challenge = log.find((r) => r.status === 401)?.challenge ?? '';
  check('401 names the resource metadata',
    challenge.includes(`resource_metadata="${base}/.well-known/oauth-protected-resource/servers/alpha/mcp"`), challenge);
  const paths = log.map((r) => `${r.method} ${r.path} ${r.status}`);
  check('discovery: resource metadata, then authorization server metadata',
    paths.includes('GET /.well-known/oauth-protected-resource/servers/alpha/mcp 200')
      && paths.includes('GET /.well-known/oauth-authorization-server 200'), paths.join(', '));
  const auth = provider.authorizationUrl;
  check('authorization request at the proxy', auth.origin + auth.pathname === `${base}/oauth/authorize`
    && auth.searchParams.get('resource') === alpha.href && auth.searchParams.get('code_challenge_method') === 'S256',
  `${auth.pathname} resource=${auth.searchParams.get('resource')} client_id=${auth.searchParams.get('client_id')}`);
  const { callback, pages: passed } = await new Browser().authorize(auth, redirectUri, passphrase);
  check(`the ${pages.replace(',', ' and ')} page${pages.includes(',') ? 's' : ''}, posted as a browser posts them`,
    passed.join(',') === pages && callback.searchParams.get('iss') === base && !!callback.searchParams.get('code'),
    `pages ${passed.join(', ')}; back with code and iss=${callback.searchParams.get('iss')}`);
  await transport.finishAuth(callback.searchParams.get('code'));
  check('tokens', !!provider.tokens()?.access_token && !!provider.tokens()?.refresh_token,
    `token_type ${provider.tokens()?.token_type}, expires_in ${provider.tokens()?.expires_in}, a refresh token`);
}

async function refused() {
  const res = await fetch(beta, {
    method: 'POST',
    headers: { authorization: `Bearer ${provider.tokens().access_token}`, 'content-type': 'application/json',
      accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize',
      params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'x', version: '0' } } }),
  });
  const challenge = res.headers.get('www-authenticate') ?? '';
  check('the alpha token refused on beta', res.status === 401 && challenge.includes('error="invalid_token"')
    && challenge.includes(`resource_metadata="${base}/.well-known/oauth-protected-resource/servers/beta/mcp"`),
  `${res.status} ${challenge}`);
}

/** The access token spoiled, a call: the proxy answers 401 and the SDK refreshes by itself. */
async function refresh(label) {
  const before = { ...provider.tokens() };
  provider.store.tokens = { ...before, access_token: `${before.access_token.slice(0, -4)}AAAA` };
  const log = [];
  const client = await connect(provider, log);
  const who = await whoami(client);
  await client.close();
  const after = provider.tokens();
  const paths = log.map((r) => `${r.method} ${r.path} ${r.status}`);
  check(`${label}: the spoiled token gets a 401, the SDK refreshes by itself`,
    paths[0] === 'POST /servers/alpha/mcp 401' && paths.includes('POST /oauth/token 200'), paths.join(', '));
  check(`${label}: new tokens, the refresh token rotated, no new sign-in`,
    provider.redirected === 0 && after.access_token !== before.access_token && after.refresh_token !== before.refresh_token,
    `saveTokens ${provider.saved}x, redirectToAuthorization ${provider.redirected}x`);
  check(`${label}: whoami with the refreshed token`, who.subject === 'owner' && who.client_id === provider.store.client.client_id,
    JSON.stringify(who));
}

const provider = step === 'cimd'
  ? new Provider({}, `${cimdBase}/ts-client.json`)
  : new Provider(step === 'resume' ? JSON.parse(readFileSync(stateFile, 'utf8')) : {});

if (step === 'signin' || step === 'cimd') {
  const log = [];
  await signIn(provider, log);
  const paths = log.map((r) => `${r.method} ${r.path} ${r.status}`);
  const clientId = provider.store.client?.client_id;
  if (step === 'signin') {
    check('dynamic client registration (RFC 7591)', paths.includes('POST /oauth/register 201') && !!clientId,
      `client_id ${clientId?.slice(0, 6)}…`);
  } else {
    check('no registration: the client id is the metadata document URL',
      !paths.some((p) => p.includes('/oauth/register')) && clientId === provider.clientMetadataUrl, clientId);
  }
  const client = await connect(provider, []);
  const who = await whoami(client);
  check('tools/call whoami on alpha', who.subject === 'owner' && who.issuer === base && who.client_id === clientId
    && who.scopes?.includes('mcp:tools'), JSON.stringify(who));
  const echo = await client.callTool({ name: 'echo', arguments: { text: 'through the built-in server', uppercase: true } });
  check('tools/call echo on alpha', echo.content[0].text === 'THROUGH THE BUILT-IN SERVER', JSON.stringify(echo.content[0].text));
  await client.close();
  if (step === 'signin') {
    provider.saved = 0;
    provider.redirected = 0;
    await refresh('refresh');
    await refused();
  }
} else if (step === 'resume') {
  const stored = provider.tokens().access_token;
  const log = [];
  const client = await connect(provider, log);
  const who = await whoami(client);
  await client.close();
  check('the stored access token works as it is', provider.saved === 0 && provider.tokens().access_token === stored
    && !log.some((r) => r.status === 401) && who.subject === 'owner', JSON.stringify(who));
  await refresh('resume');
  // The registered client is still known: a new sign-in with it (a client that kept its
  // registration but lost its tokens) needs no registration, and the consent is remembered.
  const again = new Provider({ client: provider.store.client });
  again.persist = () => {};
  const log2 = [];
  await signIn(again, log2, 'login');
  check('the registered client is still known (no new registration)',
    !log2.some((r) => r.path === '/oauth/register') && again.store.client.client_id === provider.store.client.client_id,
    `client_id ${again.store.client.client_id.slice(0, 6)}…`);
} else {
  check('step', false, `unknown step ${step}`);
}
