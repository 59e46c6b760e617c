//! Clients: their records, dynamic registration (RFC 7591, `POST /oauth/register`), the
//! lookup of a `client_id` (a registered one, or a client ID metadata document's URL), the
//! client authentication of the token and revocation endpoints, and redirect URI matching.
//!
//! Open registration is bounded: at most `--oauth-max-clients` clients at once, each kept
//! `--oauth-client-lifetime` after its registration or its last token. An unknown, expired
//! or deleted client gets 401 `invalid_client` at the token endpoint, so it registers again.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;
use tracing::info;
use url::{Host, Url};

use super::store::{unix_now, Kind, Put};
use super::{digest_key, oauth_error, random_token, AuthServer};
use crate::state::AppState;
use crate::Error;

/// The largest registration request read.
pub const MAX_REGISTRATION_BYTES: usize = 16 * 1024;
/// The most redirect URIs a client may have.
pub const MAX_REDIRECT_URIS: usize = 10;
/// The longest redirect URI (or client name) accepted.
const MAX_URI_LEN: usize = 2_000;
/// The longest client name kept.
const MAX_NAME_LEN: usize = 200;

/// A client the server knows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Client {
    pub(crate) client_id: String,
    /// What it calls itself (shown on the consent page, marked as unverified).
    pub(crate) client_name: Option<String>,
    pub(crate) redirect_uris: Vec<String>,
    /// `none`, `client_secret_post` or `client_secret_basic`.
    pub(crate) auth_method: String,
    /// The digest of its secret, for a confidential client.
    pub(crate) secret_digest: Option<String>,
    /// When it registered (seconds since the epoch).
    pub(crate) issued_at: u64,
    /// Its id is the URL of a client ID metadata document.
    #[serde(default)]
    pub(crate) from_document: bool,
}

impl Client {
    /// The name to show: its own (unverified) or its id.
    pub(crate) fn display_name(&self) -> &str {
        self.client_name.as_deref().unwrap_or(&self.client_id)
    }

    /// Whether `presented` is one of its redirect URIs: exactly, or a loopback redirect on
    /// another port (RFC 8252 §7.3: native apps listen on whatever port is free).
    pub(crate) fn redirect_allowed(&self, presented: &str) -> bool {
        self.redirect_uris
            .iter()
            .any(|r| r == presented || same_but_loopback_port(r, presented))
    }
}

/// Whether `a` and `b` are the same http loopback redirect but for the port.
fn same_but_loopback_port(a: &str, b: &str) -> bool {
    let (Ok(mut a), Ok(mut b)) = (Url::parse(a), Url::parse(b)) else {
        return false;
    };
    if a.scheme() != "http" || !is_loopback(&a) || !is_loopback(&b) {
        return false;
    }
    let _ = a.set_port(None);
    let _ = b.set_port(None);
    a == b
}

/// A loopback host: an IP test, never a prefix test (`127.evil.example` is not one).
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Checks one redirect URI a client declares: https; http on loopback only; or a native
/// app's private-use scheme (RFC 8252 §7.1: reverse domain name, so it has a dot). No
/// fragment.
pub(crate) fn check_redirect_uri(uri: &str) -> Result<(), String> {
    if uri.len() > MAX_URI_LEN {
        return Err("a redirect URI is too long".into());
    }
    let url = Url::parse(uri).map_err(|e| format!("`{uri}` is not a URL: {e}"))?;
    if url.fragment().is_some() {
        return Err(format!("`{uri}` has a fragment"));
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&url) => Ok(()),
        "http" => Err(format!("`{uri}`: http only on loopback")),
        scheme if scheme.contains('.') => Ok(()),
        scheme => Err(format!("`{uri}`: scheme {scheme} is not allowed")),
    }
}

/// What a registration request may say (RFC 7591 §2); the rest is ignored.
#[derive(Debug, Deserialize)]
struct Registration {
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    client_name: Option<String>,
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
    #[serde(default)]
    grant_types: Option<Vec<String>>,
    #[serde(default)]
    response_types: Option<Vec<String>>,
    #[serde(default)]
    scope: Option<String>,
}

/// `POST /oauth/register`.
pub(crate) async fn register(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let Some(server) = super::of(&state) else {
        return super::not_running();
    };
    // JSON only: a web page cannot send it without a CORS preflight (`text/plain` it can).
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if !crate::guard::is_json_content_type(content_type) {
        return oauth_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_client_metadata",
            "client metadata is sent as application/json",
        );
    }
    let bad = |code: &str, why: &str| oauth_error(StatusCode::BAD_REQUEST, code, why);
    if body.len() > MAX_REGISTRATION_BYTES {
        return bad("invalid_client_metadata", "the registration is too large");
    }
    let Ok(req) = serde_json::from_slice::<Registration>(&body) else {
        return bad(
            "invalid_client_metadata",
            "the body is not client metadata (JSON)",
        );
    };
    if req.redirect_uris.is_empty() || req.redirect_uris.len() > MAX_REDIRECT_URIS {
        return bad(
            "invalid_redirect_uri",
            "redirect_uris must list 1 to 10 URIs",
        );
    }
    for uri in &req.redirect_uris {
        if let Err(why) = check_redirect_uri(uri) {
            return bad("invalid_redirect_uri", &why);
        }
    }
    let method = req
        .token_endpoint_auth_method
        .clone()
        .unwrap_or_else(|| "client_secret_basic".to_owned());
    if !["none", "client_secret_post", "client_secret_basic"].contains(&method.as_str()) {
        return bad(
            "invalid_client_metadata",
            "token_endpoint_auth_method must be none, client_secret_post or client_secret_basic",
        );
    }
    let grants = req
        .grant_types
        .clone()
        .unwrap_or_else(|| vec!["authorization_code".into()]);
    if grants
        .iter()
        .any(|g| g != "authorization_code" && g != "refresh_token")
    {
        return bad(
            "invalid_client_metadata",
            "grant_types may be authorization_code and refresh_token only",
        );
    }
    if req
        .response_types
        .as_ref()
        .is_some_and(|r| r.iter().any(|t| t != "code"))
    {
        return bad("invalid_client_metadata", "response_types may be code only");
    }
    let name = req
        .client_name
        .as_deref()
        .map(|n| {
            n.chars()
                .filter(|c| !c.is_control())
                .take(MAX_NAME_LEN)
                .collect::<String>()
        })
        .filter(|n| !n.trim().is_empty());
    let secret = (method != "none").then(|| random_token(32));
    let client = Client {
        client_id: format!("mcp-client-{}", random_token(18)),
        client_name: name,
        redirect_uris: req.redirect_uris.clone(),
        auth_method: method.clone(),
        secret_digest: secret.as_deref().map(digest_key),
        issued_at: unix_now(),
        from_document: false,
    };
    match server.save_client(&client, true).await {
        Ok(true) => {}
        Ok(false) => {
            info!(
                max = server.settings.max_clients,
                "client registration refused: --oauth-max-clients reached"
            );
            return oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "too many registered clients; retry later",
            );
        }
        Err(e) => return state_error(e),
    }
    info!(client = %client.display_name(), method = %method, "client registered");
    let expires = client.issued_at + server.settings.client_lifetime.as_secs();
    let mut body = json!({
        "client_id": client.client_id,
        "client_id_issued_at": client.issued_at,
        "redirect_uris": client.redirect_uris,
        "token_endpoint_auth_method": method,
        "grant_types": grants,
        "response_types": ["code"],
    });
    if let Some(name) = &client.client_name {
        body["client_name"] = json!(name);
    }
    if let Some(scope) = &req.scope {
        body["scope"] = json!(scope);
    }
    if let Some(secret) = secret {
        body["client_secret"] = json!(secret);
        body["client_secret_expires_at"] = json!(expires);
    }
    (
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(body),
    )
        .into_response()
}

/// The 503 of a store that cannot be reached, logged.
pub(crate) fn state_error(e: Error) -> Response {
    tracing::warn!(error = %e, "authorization server state unavailable");
    oauth_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "the authorization server cannot reach its state; retry later",
    )
}

/// Why a client is refused at the token or revocation endpoint.
pub(crate) enum ClientRefusal {
    /// 401 `invalid_client`.
    Invalid(&'static str),
    /// The store failed.
    State(Error),
}

impl ClientRefusal {
    pub(crate) fn into_response(self) -> Response {
        match self {
            ClientRefusal::Invalid(why) => {
                let mut r = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", why);
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Basic realm=\"mcp-proxy\""),
                );
                r
            }
            ClientRefusal::State(e) => state_error(e),
        }
    }
}

impl AuthServer {
    /// Writes a registered client, renewing its lifetime; `new` counts it against the cap
    /// (`Ok(false)`: the cap is reached).
    pub(crate) async fn save_client(&self, client: &Client, new: bool) -> Result<bool, Error> {
        // A new registration is kept only briefly until its first token renews it (`issue`).
        let (mode, lifetime) = if new {
            let unused = self.settings.unused_client_lifetime;
            (
                Put::Capped(self.settings.max_clients),
                unused.min(self.settings.client_lifetime),
            )
        } else {
            (Put::Always, self.settings.client_lifetime)
        };
        let value = serde_json::to_string(client).expect("serializes");
        self.store
            .put(Kind::Client, &client.client_id, value, lifetime, mode)
            .await
    }

    /// The client `client_id` names: a registered one, or the client ID metadata document
    /// at that URL. `Ok(None)`: unknown (or its document is unusable: the reason is logged).
    pub(crate) async fn client(&self, client_id: &str) -> Result<Option<Client>, Error> {
        if client_id.starts_with("https://") {
            return Ok(self.cimd.client(client_id).await);
        }
        if client_id.is_empty() || client_id.len() > 200 {
            return Ok(None);
        }
        match self.store.get(Kind::Client, client_id).await? {
            Some(text) => Ok(serde_json::from_str(&text).ok()),
            None => Ok(None),
        }
    }

    /// Authenticates the client of a token or revocation request: its id (form or HTTP
    /// Basic) and, for a confidential client, its secret.
    pub(crate) async fn authenticate_client(
        &self,
        headers: &HeaderMap,
        form_id: Option<&str>,
        form_secret: Option<&str>,
    ) -> Result<Client, ClientRefusal> {
        let basic = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| STANDARD.decode(b.trim()).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|pair| {
                let (id, secret) = pair.split_once(':')?;
                Some((form_urlencoded_decode(id), form_urlencoded_decode(secret)))
            });
        let (id, secret) = match (&basic, form_id) {
            (Some((id, secret)), _) => (id.as_str(), Some(secret.as_str())),
            (None, Some(id)) => (id, form_secret),
            (None, None) => return Err(ClientRefusal::Invalid("no client_id")),
        };
        let client = self
            .client(id)
            .await
            .map_err(ClientRefusal::State)?
            .ok_or(ClientRefusal::Invalid("unknown client: register again"))?;
        match (&client.secret_digest, secret) {
            (None, None) => Ok(client),
            (None, Some(_)) => Err(ClientRefusal::Invalid("this client has no secret")),
            (Some(_), None) => Err(ClientRefusal::Invalid("the client secret is missing")),
            (Some(expected), Some(secret)) => {
                if bool::from(digest_key(secret).as_bytes().ct_eq(expected.as_bytes())) {
                    Ok(client)
                } else {
                    Err(ClientRefusal::Invalid("wrong client secret"))
                }
            }
        }
    }
}

/// HTTP Basic credentials of a client are form-urlencoded first (RFC 6749 §2.3.1).
fn form_urlencoded_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(uris: &[&str]) -> Client {
        Client {
            client_id: "c".into(),
            client_name: None,
            redirect_uris: uris.iter().map(|u| u.to_string()).collect(),
            auth_method: "none".into(),
            secret_digest: None,
            issued_at: 0,
            from_document: false,
        }
    }

    #[test]
    fn redirects_match_exactly_except_the_loopback_port() {
        let c = client(&[
            "https://claude.ai/api/mcp/auth_callback",
            "http://127.0.0.1:3000/cb",
            "http://localhost/cb",
        ]);
        assert!(c.redirect_allowed("https://claude.ai/api/mcp/auth_callback"));
        assert!(c.redirect_allowed("http://127.0.0.1:51234/cb"));
        assert!(c.redirect_allowed("http://localhost:8080/cb"));
        for bad in [
            "https://claude.ai/api/mcp/auth_callback/",
            "https://claude.ai/api/mcp/auth_callback?x=1",
            "https://evil.example/api/mcp/auth_callback",
            "https://claude.ai:444/api/mcp/auth_callback",
            "http://127.0.0.1:3000/other",
            "http://127.0.0.2:3000/cb",
            "http://127.0.0.1.evil.example:3000/cb",
            "https://127.0.0.1:3000/cb",
        ] {
            assert!(!c.redirect_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn registered_redirects_are_https_loopback_or_private_schemes() {
        for ok in [
            "https://a.example/cb",
            "http://127.0.0.1/cb",
            "http://[::1]:9/cb",
            "com.example.app:/cb",
        ] {
            assert!(check_redirect_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://a.example/cb",
            "https://a.example/cb#x",
            "javascript:alert(1)",
            "myapp:/cb",
            "not a url",
        ] {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
    }
}
