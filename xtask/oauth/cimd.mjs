// Client ID metadata documents for `cargo xtask oauth`: an https server on 127.0.0.1 (a free
// port; its certificate is issued by the xtask's test CA, which the proxy trusts through its
// tests-only `--oauth-cimd-test-ca`) serving `/NAME.json` as the document of the client whose
// id is that very URL.
//
// Usage: node cimd.mjs CERT KEY REDIRECT_URI
// Prints `CIMD_URL https://127.0.0.1:PORT` once it listens, and `FETCHED /NAME.json` for each
// document served (the proxy fetches it; the client never does).
import https from 'node:https';
import { readFileSync } from 'node:fs';

const [cert, key, redirectUri] = process.argv.slice(2);
const server = https.createServer({ cert: readFileSync(cert), key: readFileSync(key) }, (req, res) => {
  const name = /^\/([a-z][a-z-]{0,40})\.json$/.exec(req.url ?? '')?.[1];
  if (req.method !== 'GET' || !name) {
    res.writeHead(404).end();
    return;
  }
  const document = {
    client_id: `${base}/${name}.json`,
    client_name: `xtask ${name} (CIMD)`,
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'none',
  };
  console.log(`FETCHED ${req.url}`);
  res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(document));
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const base = `https://127.0.0.1:${server.address().port}`;
console.log(`CIMD_URL ${base}`);
