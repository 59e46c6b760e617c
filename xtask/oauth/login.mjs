// Scripted login and consent at oidc-provider's development interactions: follows the
// authorization URL's redirects with a cookie jar, answers the login form (any name) and the
// consent form with plain form posts, and stops at the client's redirect URI.
export async function authorize(authorizationUrl, redirectUri, user) {
  const jar = new Map();
  const remember = (res) => {
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';');
      const i = pair.indexOf('=');
      jar.set(pair.slice(0, i), pair.slice(i + 1));
    }
  };
  const cookie = () => [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
  let url = new URL(authorizationUrl);
  let method = 'GET';
  let body;
  for (let hop = 0; hop < 20; hop += 1) {
    const res = await fetch(url, {
      method,
      body,
      redirect: 'manual',
      headers: { cookie: cookie(), ...(body ? { 'content-type': 'application/x-www-form-urlencoded' } : {}) },
    });
    remember(res);
    method = 'GET';
    body = undefined;
    const location = res.headers.get('location');
    if (location) {
      url = new URL(location, url);
      if (url.href.startsWith(redirectUri)) return url;
      continue;
    }
    const page = await res.text();
    const prompt = /name="prompt" value="(\w+)"/.exec(page)?.[1];
    if (res.status !== 200 || !prompt) throw new Error(`unexpected page ${res.status} at ${url}: ${page.slice(0, 300)}`);
    method = 'POST';
    body = new URLSearchParams(prompt === 'login' ? { prompt, login: user, password: 'any' } : { prompt }).toString();
  }
  throw new Error('too many redirects');
}
