//! Driving the built-in authorization server as a client and a browser do: a proxy whose
//! public URL is its own address, dynamic registration, the login and consent forms posted
//! as a browser posts them (its cookies kept by hand), and the token endpoint.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use mcp_proxy::auth::oauth::{OAuth, OAuthConfig};
use mcp_proxy::auth::server::{AuthServer, AuthServerConfig, Credentials, FileStore, Store};
use mcp_proxy::Config;
use reqwest::header::{HeaderMap, COOKIE, LOCATION, SET_COOKIE};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::common::{test_config, Proxy};

/// The passphrase of the tests' proxies.
pub(crate) const PASSPHRASE: &str = "correct horse battery staple";

/// A proxy running the built-in authorization server, its public URL its own address; its
/// state in the file at `state` (memory when `None`). `edit` adjusts the server's settings.
pub(crate) async fn start(state: Option<&Path>, edit: impl FnOnce(&mut AuthServerConfig)) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    start_on(listener, state, edit)
}

/// [`start`] on `listener` (a restart on the same address).
pub(crate) fn start_on(
    listener: TcpListener,
    state: Option<&Path>,
    edit: impl FnOnce(&mut AuthServerConfig),
) -> Proxy {
    let public = format!("http://{}", listener.local_addr().unwrap());
    let store: Arc<dyn Store> = match state {
        Some(path) => Arc::new(FileStore::open(path).unwrap()),
        None => Arc::new(FileStore::memory()),
    };
    Proxy::on(listener, builtin_config(&public, store, edit))
}

/// The configuration of such a proxy at `public`.
pub(crate) fn builtin_config(
    public: &str,
    store: Arc<dyn Store>,
    edit: impl FnOnce(&mut AuthServerConfig),
) -> Config {
    let mut resources = OAuthConfig::new(public, public).unwrap();
    resources.add_scopes("mcp:tools").unwrap();
    resources.add_scopes("alpha/admin=admin").unwrap();
    let mut settings = AuthServerConfig::new(Credentials::passphrase(PASSPHRASE).unwrap());
    edit(&mut settings);
    let server = Arc::new(AuthServer::new(settings, resources.clone(), store).unwrap());
    Config {
        oauth: Some(Arc::new(OAuth::with_local_issuer(
            resources,
            server.clone(),
        ))),
        auth_server: Some(server),
        ..test_config()
    }
}

/// An HTTP client that follows no redirect (the tests read them).
pub(crate) fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A browser: its cookies, kept by hand.
#[derive(Default)]
pub(crate) struct Browser {
    cookies: Mutex<BTreeMap<String, String>>,
}

/// A page or redirect as the browser got it.
pub(crate) struct Page {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

impl Page {
    /// The hidden inputs of its form.
    pub(crate) fn hidden(&self) -> Vec<(String, String)> {
        let unescape = |s: &str| {
            s.replace("&quot;", "\"")
                .replace("&#39;", "'")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&")
        };
        self.body
            .split("<input type=\"hidden\" name=\"")
            .skip(1)
            .map(|rest| {
                let (name, rest) = rest.split_once("\" value=\"").unwrap();
                let (value, _) = rest.split_once('"').unwrap();
                (unescape(name), unescape(value))
            })
            .collect()
    }

    /// The query of its `Location`.
    pub(crate) fn redirect(&self) -> HashMap<String, String> {
        let location = self
            .headers
            .get(LOCATION)
            .expect("a redirect")
            .to_str()
            .unwrap();
        url::Url::parse(location)
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect()
    }
}

impl Browser {
    fn absorb(&self, headers: &HeaderMap) {
        let mut jar = self.cookies.lock().unwrap();
        for value in headers.get_all(SET_COOKIE) {
            let text = value.to_str().unwrap();
            let (pair, _) = text.split_once(';').unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            jar.insert(name.to_owned(), value.to_owned());
        }
    }

    fn cookie_header(&self) -> String {
        let jar = self.cookies.lock().unwrap();
        jar.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub(crate) async fn get(&self, url: &str) -> Page {
        let resp = http()
            .get(url)
            .header(COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap();
        self.read(resp).await
    }

    pub(crate) async fn post(&self, url: &str, form: &[(String, String)]) -> Page {
        let resp = http()
            .post(url)
            .header(COOKIE, self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        self.read(resp).await
    }

    async fn read(&self, resp: reqwest::Response) -> Page {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        self.absorb(&headers);
        Page {
            status,
            headers,
            body: resp.text().await.unwrap(),
        }
    }
}

/// A PKCE verifier and its S256 challenge.
pub(crate) fn pkce() -> (String, String) {
    let verifier = format!(
        "verifier-{}-0123456789abcdefghijklmnopqrstuvwxyz",
        std::process::id()
    );
    let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    (verifier, URL_SAFE_NO_PAD.encode(digest))
}

/// A client registered by DCR with these redirect URIs, as a public client (`none`).
pub(crate) async fn register(proxy: &Proxy, redirect_uris: &[&str]) -> Value {
    let resp = http()
        .post(proxy.url("/oauth/register"))
        .json(
            &json!({"client_name": "Test client", "redirect_uris": redirect_uris,
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "none"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    resp.json().await.unwrap()
}

/// The authorization request URL.
pub(crate) fn authorize_url(
    proxy: &Proxy,
    client_id: &str,
    redirect_uri: &str,
    resource: &str,
    challenge: &str,
) -> String {
    let mut url = url::Url::parse(&proxy.url("/oauth/authorize")).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("resource", resource)
        .append_pair("state", "st-1");
    url.to_string()
}

/// Posts the page's form with `action` and `extra` fields.
pub(crate) async fn submit(
    browser: &Browser,
    proxy: &Proxy,
    page: &Page,
    action: &str,
    extra: &[(&str, &str)],
) -> Page {
    let mut form = page.hidden();
    form.push(("action".into(), action.into()));
    form.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    browser.post(&proxy.url("/oauth/authorize"), &form).await
}

/// Signs in and allows: the redirect's query (code, state, iss).
pub(crate) async fn sign_in_and_allow(
    browser: &Browser,
    proxy: &Proxy,
    url: &str,
) -> HashMap<String, String> {
    let login = browser.get(url).await;
    assert_eq!(login.status, 200, "{}", login.body);
    assert!(login.body.contains("Sign in"), "{}", login.body);
    let consent = submit(browser, proxy, &login, "login", &[("password", PASSPHRASE)]).await;
    assert_eq!(consent.status, 200, "{}", consent.body);
    assert!(consent.body.contains("Allow"), "{}", consent.body);
    let back = submit(browser, proxy, &consent, "allow", &[]).await;
    assert_eq!(back.status, 303, "{}", back.body);
    back.redirect()
}

/// A token request with `form`: its status and body.
pub(crate) async fn token(proxy: &Proxy, form: &[(&str, &str)]) -> (u16, Value) {
    let resp = http()
        .post(proxy.url("/oauth/token"))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The whole flow for a new public client: its id, and the token answer.
pub(crate) async fn tokens_for(proxy: &Proxy, resource: &str) -> (String, Value) {
    let redirect = "http://127.0.0.1:4321/callback";
    let client = register(proxy, &[redirect]).await;
    let client_id = client["client_id"].as_str().unwrap().to_owned();
    let (verifier, challenge) = pkce();
    let browser = Browser::default();
    let back = sign_in_and_allow(
        &browser,
        proxy,
        &authorize_url(proxy, &client_id, redirect, resource, &challenge),
    )
    .await;
    let (status, body) = token(
        proxy,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
            ("code", &back["code"]),
            ("redirect_uri", redirect),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    (client_id, body)
}
