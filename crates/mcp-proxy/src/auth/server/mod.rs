//! The built-in OAuth 2.1 authorization server (`--oauth-issuer builtin`): the proxy issues
//! the access tokens its own resource server checks, so one developer with a laptop can put
//! a server behind Claude.ai (or any MCP client that signs in) without an identity provider.
//!
//! Its issuer is the proxy's public URL. Clients find it through every pool's protected
//! resource metadata, register (a Client ID Metadata Document, or RFC 7591 dynamic
//! registration), send the user to its login and consent pages, and get short-lived access
//! tokens bound to one pool's resource URL, with rotating refresh tokens. Everything it
//! knows lives in a [`Store`]: a file by default, Redis in a cluster, so restarts and other
//! instances see the same keys, clients, codes, refresh families, revocations and consents.
//!
//! # Layout
//! - `store` / `redis_store`: the state, behind one small trait.
//! - `keys`: signing keys, rotated without logging anyone out; the JWKS.
//! - `login`: passphrase or users file, and the login attempt limit.
//! - `clients`: client records, dynamic registration, redirect URI matching.
//! - `cimd`: client ID metadata documents, fetched with SSRF guards and cached.
//! - `metadata`: RFC 8414 metadata and the JWKS routes.
//! - `authorize`: the authorization endpoint: login and consent, codes.
//! - `pages`: the HTML pages, their headers and cookies.
//! - `token`: the token endpoint (code + PKCE, refresh rotation) and revocation.
//! - `revocation`: the short cache of the resource server's revocation check.

mod authorize;
pub mod cimd;
pub mod clients;
pub mod keys;
pub mod login;
pub(crate) mod metadata;
mod pages;
#[cfg(feature = "cluster")]
pub mod redis_store;
pub mod revocation;
pub mod store;
mod token;

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures::future::BoxFuture;
use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};

pub(crate) use authorize::{get as authorize_page, post as authorize_form};
pub(crate) use clients::register;
pub use login::Credentials;
pub(crate) use pages::style;
pub use store::{FileStore, Kind, Put, Store};
pub(crate) use token::{revoke, token};

use super::oauth::{LocalIssuer, OAuthConfig};
use crate::Error;

/// The largest body the authorization server's routes read (forms, registrations).
pub const MAX_API_BODY: usize = 16 * 1024;
/// Default lifetime of an access token.
pub const DEFAULT_ACCESS_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// Default lifetime of a refresh token (each rotation starts it again).
pub const DEFAULT_REFRESH_LIFETIME: Duration = Duration::from_secs(30 * 86_400);
/// Default time a dynamically registered client is kept after its last token.
pub const DEFAULT_CLIENT_LIFETIME: Duration = Duration::from_secs(30 * 86_400);
/// How long a dynamically registered client that has not got a token yet is kept: a flood of
/// registrations holds `--oauth-max-clients` for this long at most, not a month.
pub const DEFAULT_UNUSED_CLIENT_LIFETIME: Duration = Duration::from_secs(3_600);
/// Default cap on dynamically registered clients kept at once.
pub const DEFAULT_MAX_CLIENTS: usize = 1_000;
/// Default lifetime of an authorization code.
pub const DEFAULT_CODE_LIFETIME: Duration = Duration::from_secs(60);
/// Lifetime of a browser's login.
pub const LOGIN_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Lifetime of a user's consent to a client for a pool.
pub const CONSENT_LIFETIME: Duration = Duration::from_secs(90 * 86_400);

/// What the authorization server is told (flags).
#[derive(Clone, Debug)]
pub struct AuthServerConfig {
    /// Who may sign in.
    pub credentials: Credentials,
    /// How long an access token lives.
    pub access_lifetime: Duration,
    /// How long an authorization code may wait for its exchange.
    pub code_lifetime: Duration,
    /// How long a refresh token lives (from its issue).
    pub refresh_lifetime: Duration,
    /// How long a dynamically registered client is kept after its last token.
    pub client_lifetime: Duration,
    /// How long a dynamically registered client is kept before its first token.
    pub unused_client_lifetime: Duration,
    /// The most dynamically registered clients kept at once.
    pub max_clients: usize,
    /// How long one signing key signs.
    pub key_rotation: Duration,
    /// Tests only: trust this CA (PEM) for client metadata documents, and allow them on
    /// loopback addresses.
    pub cimd_test_ca: Option<String>,
}

impl AuthServerConfig {
    /// The defaults, with these credentials.
    pub fn new(credentials: Credentials) -> Self {
        AuthServerConfig {
            credentials,
            access_lifetime: DEFAULT_ACCESS_LIFETIME,
            code_lifetime: DEFAULT_CODE_LIFETIME,
            refresh_lifetime: DEFAULT_REFRESH_LIFETIME,
            client_lifetime: DEFAULT_CLIENT_LIFETIME,
            unused_client_lifetime: DEFAULT_UNUSED_CLIENT_LIFETIME,
            max_clients: DEFAULT_MAX_CLIENTS,
            key_rotation: keys::DEFAULT_ROTATION,
            cimd_test_ca: None,
        }
    }
}

/// The authorization server; shared by its routes and by the resource server.
pub struct AuthServer {
    settings: AuthServerConfig,
    /// The public URL and the pools' scopes (the resource server's own settings).
    resources: OAuthConfig,
    store: Arc<dyn Store>,
    keys: keys::Keys,
    limiter: login::LoginLimiter,
    cimd: cimd::Documents,
    /// Tokens recently found not revoked (see `revocation`).
    valid: revocation::ValidCache,
}

impl std::fmt::Debug for AuthServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthServer")
            .field("issuer", &self.issuer())
            .field("store", &self.store.describe())
            .field("settings", &self.settings)
            .finish()
    }
}

impl AuthServer {
    /// The authorization server of `resources` (whose public URL is its issuer), keeping its
    /// state in `store`.
    pub fn new(
        settings: AuthServerConfig,
        resources: OAuthConfig,
        store: Arc<dyn Store>,
    ) -> Result<Self, Error> {
        Ok(AuthServer {
            keys: keys::Keys::new(store.clone(), settings.key_rotation),
            cimd: cimd::Documents::new(settings.cimd_test_ca.as_deref())?,
            limiter: login::LoginLimiter::default(),
            valid: revocation::ValidCache::default(),
            settings,
            resources,
            store,
        })
    }

    /// The issuer identifier: the proxy's public URL.
    pub fn issuer(&self) -> &str {
        &self.resources.issuer
    }

    /// Where its state lives, for the log.
    pub fn describe_store(&self) -> String {
        self.store.describe()
    }

    /// The URL of one of its endpoints (`/oauth/…`).
    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.issuer())
    }

    /// The pool whose resource URL is `resource` (`""`: the default pool).
    fn pool_of(&self, resource: &str) -> Option<String> {
        let path = resource.strip_prefix(&self.resources.public_url)?;
        if path == "/mcp" {
            return Some(String::new());
        }
        let name = path.strip_prefix("/servers/")?.strip_suffix("/mcp")?;
        mcp_protocol::wire::is_valid_pool_name(name).then(|| name.to_owned())
    }

    /// Cookies carry `Secure` unless the public URL is plain http on loopback, where a
    /// browser (and a scripted client's cookie jar) would not send a `Secure` cookie back
    /// over http, and nobody on the network can read it anyway.
    fn secure_cookies(&self) -> bool {
        !self.resources.public_url.starts_with("http://")
    }
}

impl LocalIssuer for AuthServer {
    fn jwks(&self) -> BoxFuture<'_, Result<Vec<u8>, String>> {
        Box::pin(async move {
            let set = self.keys.jwks().await.map_err(|e| e.to_string())?;
            Ok(serde_json::to_vec(&set).expect("serializes"))
        })
    }

    fn still_valid<'a>(
        &'a self,
        jti: Option<&'a str>,
        family: Option<&'a str>,
    ) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            if let Some(jti) = jti {
                if self.valid.fresh(jti, family) {
                    return Ok(true);
                }
            }
            let revoked = match jti {
                Some(jti) => self.store.get(Kind::RevokedToken, jti).await,
                None => Ok(None),
            }
            .map_err(|e| e.to_string())?;
            if revoked.is_some() {
                return Ok(false);
            }
            let valid = match family {
                Some(f) => self
                    .store
                    .get(Kind::Family, f)
                    .await
                    .map_err(|e| e.to_string())?
                    .is_some(),
                None => true,
            };
            if let (true, Some(jti)) = (valid, jti) {
                self.valid.remember(jti, family);
            }
            Ok(valid)
        })
    }
}

impl AuthServer {
    /// Revokes a refresh family (its refresh tokens and access tokens), honoured by this
    /// instance at once.
    async fn revoke_family(&self, family: &str) -> Result<(), Error> {
        self.store.delete(Kind::Family, family).await?;
        self.valid.clear();
        Ok(())
    }
}

/// The authorization server of `state`, if the proxy runs one.
pub(crate) fn of(state: &crate::state::AppState) -> Option<&Arc<AuthServer>> {
    state.config().auth_server.as_ref()
}

/// An OAuth error answer (RFC 6749 §5.2): `{"error", "error_description"}`, not cached.
pub(crate) fn oauth_error(
    status: axum::http::StatusCode,
    code: &str,
    description: &str,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let body = serde_json::json!({"error": code, "error_description": description});
    (
        status,
        [
            (axum::http::header::CACHE_CONTROL, "no-store"),
            (axum::http::header::PRAGMA, "no-cache"),
        ],
        axum::Json(body),
    )
        .into_response()
}

/// The 404 of every authorization server route while the proxy runs none.
pub(crate) fn not_running() -> axum::response::Response {
    use axum::response::IntoResponse;
    axum::http::StatusCode::NOT_FOUND.into_response()
}

/// `N` random bytes from the system's generator.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random generator works");
    bytes
}

/// A random token of `n` bytes, base64url.
pub(crate) fn random_token(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random generator works");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The key a secret is stored under: its SHA-256, base64url (the secret itself never is).
pub(crate) fn digest_key(secret: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA256, secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_by_resource_url() {
        let resources =
            OAuthConfig::new("https://mcp.example.com", "https://mcp.example.com").unwrap();
        let server = AuthServer::new(
            AuthServerConfig::new(Credentials::passphrase("a long passphrase").unwrap()),
            resources,
            Arc::new(FileStore::memory()),
        )
        .unwrap();
        assert_eq!(
            server.pool_of("https://mcp.example.com/mcp").as_deref(),
            Some("")
        );
        assert_eq!(
            server
                .pool_of("https://mcp.example.com/servers/files/mcp")
                .as_deref(),
            Some("files")
        );
        for other in [
            "https://mcp.example.com/servers/fi%20les/mcp",
            "https://mcp.example.com/servers/files/mcp/",
            "https://mcp.example.com.evil/mcp",
            "https://other.example/mcp",
            "https://mcp.example.com/message",
        ] {
            assert_eq!(server.pool_of(other), None, "{other}");
        }
        assert!(server.secure_cookies());
    }
}
