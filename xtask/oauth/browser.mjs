// A scripted browser for the built-in authorization server's pages (`cargo xtask oauth`):
// follows the authorization URL, reads each page's form as a browser does (every named
// input, the hidden CSRF token included, and the one submit button pressed), fills the
// passphrase, presses Allow on the consent page, and keeps the cookies the pages set (by
// path, as a browser would send them back). It stops at the client's redirect URI and
// returns it with the pages it went through: no step of the pages is skipped.

const entities = { amp: '&', lt: '<', gt: '>', quot: '"', '#39': "'" };
const decode = (text) => text.replace(/&(amp|lt|gt|quot|#39);/g, (_, e) => entities[e]);

/** The attributes of one tag's text (`name="value"` or bare `name`). */
function attributes(text) {
  const attrs = {};
  for (const m of text.matchAll(/([a-zA-Z_:][-a-zA-Z0-9_:.]*)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?/g)) {
    attrs[m[1].toLowerCase()] = decode(m[2] ?? m[3] ?? m[4] ?? '');
  }
  return attrs;
}

/** The forms of a page: method, action, controls (inputs and buttons) in document order. */
export function forms(html) {
  const found = [];
  for (const f of html.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form>/gi)) {
    const form = attributes(f[1]);
    const controls = [...f[2].matchAll(/<(input|button)\b([^>]*)>/gi)].map((c) => ({
      tag: c[1].toLowerCase(),
      ...attributes(c[2]),
    }));
    found.push({ method: (form.method ?? 'get').toLowerCase(), action: form.action ?? '', controls });
  }
  return found;
}

/** The body a browser submits for `form` with `press` (a submit button) pressed. */
function submission(form, values, press) {
  const body = new URLSearchParams();
  for (const c of form.controls) {
    const type = (c.type ?? (c.tag === 'button' ? 'submit' : 'text')).toLowerCase();
    if (!c.name || type === 'submit' || type === 'button' || type === 'reset') continue;
    body.append(c.name, type === 'hidden' ? (c.value ?? '') : (values[c.name] ?? c.value ?? ''));
  }
  if (press.name) body.append(press.name, press.value ?? '');
  return body;
}

export class Browser {
  constructor() {
    /** name -> {value, path}, for the one origin these tests visit. */
    this.cookies = new Map();
  }

  remember(res) {
    for (const header of res.headers.getSetCookie()) {
      const [pair, ...attrs] = header.split(';').map((s) => s.trim());
      const i = pair.indexOf('=');
      const path = attrs.find((a) => a.toLowerCase().startsWith('path='))?.slice(5) ?? '/';
      const maxAge = attrs.find((a) => a.toLowerCase().startsWith('max-age='));
      if (maxAge && Number(maxAge.slice(8)) <= 0) this.cookies.delete(pair.slice(0, i));
      else this.cookies.set(pair.slice(0, i), { value: pair.slice(i + 1), path });
    }
  }

  cookieHeader(url) {
    return [...this.cookies]
      .filter(([, c]) => url.pathname === c.path || url.pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`))
      .map(([name, c]) => `${name}=${c.value}`)
      .join('; ');
  }

  async request(url, method = 'GET', body) {
    const headers = { cookie: this.cookieHeader(url), accept: 'text/html' };
    if (body) headers['content-type'] = 'application/x-www-form-urlencoded';
    const res = await fetch(url, { method, body: body?.toString(), redirect: 'manual', headers });
    this.remember(res);
    return res;
  }

  /**
   * Signs in with `passphrase` and allows the client, from `authorizationUrl` to the client's
   * `redirectUri`. Returns `{ callback, pages }`: the callback URL (with `code`, `state`,
   * `iss`) and the pages passed (`login`, `consent`).
   */
  async authorize(authorizationUrl, redirectUri, passphrase) {
    let url = new URL(authorizationUrl);
    let method = 'GET';
    let body;
    const pages = [];
    for (let hop = 0; hop < 10; hop += 1) {
      const res = await this.request(url, method, body);
      method = 'GET';
      body = undefined;
      const location = res.headers.get('location');
      if (location && res.status >= 300 && res.status < 400) {
        url = new URL(location, url);
        if (url.href.startsWith(redirectUri)) return { callback: url, pages };
        continue;
      }
      const html = await res.text();
      const [form] = forms(html);
      if (res.status !== 200 || !form) {
        throw new Error(`page ${res.status} at ${url.pathname} without a form: ${html.replace(/<[^>]+>/g, ' ').slice(0, 300)}`);
      }
      const submits = form.controls.filter((c) => (c.type ?? (c.tag === 'button' ? 'submit' : '')) === 'submit');
      let press;
      if (form.controls.some((c) => c.type === 'password')) {
        pages.push('login');
        press = submits[0];
      } else {
        pages.push('consent');
        press = submits.find((c) => /allow/i.test(c.value ?? ''));
      }
      if (!press) throw new Error(`no button to press on the ${pages.at(-1)} page`);
      const password = form.controls.find((c) => c.type === 'password')?.name;
      const values = password ? { [password]: passphrase } : {};
      url = new URL(form.action || url.href, url);
      method = form.method.toUpperCase();
      body = submission(form, values, press);
      if (method === 'GET') {
        url.search = body.toString();
        body = undefined;
      }
    }
    throw new Error('too many pages or redirects');
  }
}
