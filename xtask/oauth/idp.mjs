// A real identity provider for `cargo xtask oauth`: npm `oidc-provider` (an OpenID-certified
// authorization server) on 127.0.0.1 with a free port, its development interactions (a login
// form taking any name, a consent form) scripted by the clients with plain form posts.
//
// Usage: node idp.mjs SCOPE
// Prints `IDP_URL http://127.0.0.1:PORT` once it listens. Access tokens are JWTs (RS256, the
// provider's development key) whose `aud` is the resource indicator the client sent (RFC
// 8707): the pool's resource URL, as the proxy's metadata names it.
import http from 'node:http';
import Provider from 'oidc-provider';

const scope = process.argv[2] ?? 'mcp:tools';
const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [],
  // The resource scope is a scope clients may register and ask for.
  scopes: ['openid', 'offline_access', scope],
  clientDefaults: {
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'none',
  },
  features: {
    devInteractions: { enabled: true },
    registration: { enabled: true },
    resourceIndicators: {
      enabled: true,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resourceIndicator) => ({
        scope,
        audience: resourceIndicator,
        accessTokenTTL: 600,
        accessTokenFormat: 'jwt',
      }),
    },
  },
  pkce: { required: () => true },
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.on('grant.error', (ctx, err) => console.error('grant.error', err.message, err.error_description ?? ''));
provider.on('authorization.error', (ctx, err) => console.error('authorization.error', err.message, err.error_description ?? ''));
provider.on('registration_create.error', (ctx, err) => console.error('registration.error', err.message, err.error_description ?? ''));
server.on('request', provider.callback());
console.log(`IDP_URL ${issuer}`);
