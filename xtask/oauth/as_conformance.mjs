// `cargo xtask oauth`: the MCP conformance suite's authorization server scenarios
// (`conformance authorization`, 0.2.0-alpha.12) against mcp-proxy's built-in server. The suite
// needs a registered client and a person to sign in at the URL it prints; this registers the
// client (RFC 7591, its redirect URI on the suite's callback port), runs the suite, and signs
// in at the printed URL with the scripted browser, which the proxy's pages send back to the
// suite's callback.
//
// Usage: node as_conformance.mjs CONFORMANCE_CLI BASE PASSPHRASE_FILE OUT_DIR
// Prints the suite's output; exits with its status.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { Browser } from './browser.mjs';

const [cli, base, passphraseFile, outDir] = process.argv.slice(2);
const passphrase = readFileSync(passphraseFile, 'utf8').trim();
setTimeout(() => { console.log('FAIL deadline: 60 s passed'); process.exit(1); }, 60_000).unref();

// A port that was free a moment ago, for the suite's callback server.
const port = await new Promise((resolve) => {
  const probe = net.createServer().listen(0, '127.0.0.1', () => {
    const { port: free } = probe.address();
    probe.close(() => resolve(free));
  });
});
const redirectUri = `http://127.0.0.1:${port}/callback`;
const registered = await fetch(`${base}/oauth/register`, {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ client_name: 'MCP conformance suite', redirect_uris: [redirectUri], token_endpoint_auth_method: 'none' }),
});
const { client_id: clientId } = await registered.json();
if (registered.status !== 201 || !clientId) {
  console.log(`FAIL registration: ${registered.status}`);
  process.exit(1);
}

const suite = spawn(process.execPath, [cli, 'authorization', '--url', base, '--client-id', clientId,
  '--resource', `${base}/servers/alpha/mcp`, '--port', String(port), '--output-dir', outDir],
{ stdio: ['ignore', 'pipe', 'inherit'] });
let signedIn = false;
let pending = '';
suite.stdout.on('data', async (chunk) => {
  process.stdout.write(chunk);
  pending += chunk.toString();
  const url = /(http:\/\/\S+\/oauth\/authorize\?\S+)/.exec(pending)?.[1];
  if (!url || signedIn) return;
  signedIn = true;
  // Sign in once the suite listens for the callback (it says so after printing the URL).
  while (!pending.includes('Callback server started')) {
    await new Promise((resolve) => suite.stdout.once('data', resolve));
  }
  try {
    const { callback, pages } = await new Browser().authorize(url, redirectUri, passphrase);
    const res = await fetch(callback);
    console.log(`(signed in through the ${pages.join(' and ')} pages; the suite's callback answered ${res.status})`);
  } catch (e) {
    console.log(`FAIL sign-in: ${e.message}`);
    suite.kill();
  }
});
const status = await new Promise((resolve) => suite.on('exit', (code) => resolve(code ?? 1)));
process.exit(status);
