//! The issuer's signing keys: its metadata found by discovery (RFC 8414, OpenID Connect), its
//! JWKS fetched lazily and cached.
//!
//! Nothing here runs at start-up on the request path: the proxy starts while the issuer is
//! down, a background task warms the cache up, and a request whose token names a key the
//! cache lacks refreshes it, at most once every [`MIN_REFRESH`] (a flood of tokens with made-up
//! `kid`s costs the issuer one fetch per interval, not one per token). Keys older than
//! [`MAX_AGE`] are refreshed in the background while still used, so a key the issuer
//! withdrew stops working within that time.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use reqwest::Url;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The default shortest time between two fetches of the key set.
pub const MIN_REFRESH: Duration = Duration::from_secs(5);
/// Keys older than this are refreshed in the background.
pub const MAX_AGE: Duration = Duration::from_secs(15 * 60);
/// The most a metadata document, key set or introspection answer may weigh.
pub(crate) const MAX_DOCUMENT: usize = 1024 * 1024;
/// Deadline of one request to the issuer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// What the proxy reads of the issuer's metadata.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Metadata {
    /// Must equal the configured issuer (RFC 8414 §3.3).
    pub(crate) issuer: String,
    /// Where the signing keys are.
    pub(crate) jwks_uri: String,
    /// RFC 7662, when the issuer offers it.
    #[serde(default)]
    pub(crate) introspection_endpoint: Option<String>,
}

/// One signing key.
pub(crate) struct Key {
    kid: Option<String>,
    /// The `alg` the key is restricted to, if its JWK names one.
    alg: Option<Algorithm>,
    /// The algorithms its type and curve can verify.
    fits: &'static [Algorithm],
    /// The key itself.
    pub(crate) key: DecodingKey,
}

/// The key set in use.
#[derive(Default)]
pub(crate) struct Keys {
    keys: Vec<Key>,
    /// When it was fetched; `None` before the first success.
    fetched: Option<Instant>,
    /// Bumped on each successful fetch (a request that saw an older set knows a refresh came).
    generation: u64,
}

impl Keys {
    /// The keys that may have signed a token with header `kid` and `alg`.
    pub(crate) fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Vec<&Key> {
        self.keys
            .iter()
            .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
            .filter(|k| k.alg.is_none_or(|a| a == alg) && k.fits.contains(&alg))
            .collect()
    }

    /// Whether any key set was ever fetched.
    pub(crate) fn loaded(&self) -> bool {
        self.fetched.is_some()
    }
}

/// The algorithms a JWK can verify, by its type and curve; `None` for keys the proxy never
/// uses (symmetric keys, encryption keys, unknown curves).
fn fits(jwk: &Jwk) -> Option<&'static [Algorithm]> {
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    Some(match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => &[
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            &[Algorithm::EdDSA]
        }
        _ => return None,
    })
}

/// The signature algorithm a JWK's `alg` names; `Err` for one that is not a signature
/// algorithm (an encryption key's), `Ok(None)` when it names none.
fn key_alg(jwk: &Jwk) -> Result<Option<Algorithm>, ()> {
    match jwk.common.key_algorithm {
        None => Ok(None),
        Some(a) => Ok(Some(match a {
            KeyAlgorithm::ES256 => Algorithm::ES256,
            KeyAlgorithm::ES384 => Algorithm::ES384,
            KeyAlgorithm::RS256 => Algorithm::RS256,
            KeyAlgorithm::RS384 => Algorithm::RS384,
            KeyAlgorithm::RS512 => Algorithm::RS512,
            KeyAlgorithm::PS256 => Algorithm::PS256,
            KeyAlgorithm::PS384 => Algorithm::PS384,
            KeyAlgorithm::PS512 => Algorithm::PS512,
            KeyAlgorithm::EdDSA => Algorithm::EdDSA,
            // Symmetric and encryption algorithms: never a key to verify with here.
            _ => return Err(()),
        })),
    }
}

/// Parses a JWKS, keeping the keys the proxy can use and skipping (not failing on) the rest:
/// providers publish encryption keys and key types a library may not know.
pub(crate) fn parse_jwks(body: &[u8]) -> Result<Vec<Key>, String> {
    #[derive(Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_slice(body).map_err(|e| format!("not a JWK set: {e}"))?;
    let mut keys = Vec::new();
    for value in set.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        let (Some(fits), Ok(alg)) = (fits(&jwk), key_alg(&jwk)) else {
            continue;
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        keys.push(Key {
            kid: jwk.common.key_id.clone(),
            alg,
            fits,
            key,
        });
    }
    Ok(keys)
}

/// An issuer in this very process (the built-in authorization server): its key set is read
/// directly, not fetched over HTTP (the public URL may not be reachable from the proxy
/// itself), and its tokens can be revoked before they expire.
pub trait LocalIssuer: Send + Sync {
    /// The key set, as its JWKS document.
    fn jwks(&self) -> BoxFuture<'_, Result<Vec<u8>, String>>;
    /// Whether a token with this `jti` of this refresh family (`fid`) is still good: neither
    /// revoked itself nor of a revoked family.
    fn still_valid<'a>(
        &'a self,
        jti: Option<&'a str>,
        family: Option<&'a str>,
    ) -> BoxFuture<'a, Result<bool, String>>;
}

/// The issuer: its metadata and key set, fetched on demand and cached.
pub(crate) struct Issuer {
    /// The configured issuer identifier.
    issuer: String,
    /// Set when the issuer is this process's own authorization server.
    pub(crate) local: Option<Arc<dyn LocalIssuer>>,
    /// The shortest time between two fetches.
    min_refresh: Duration,
    http: reqwest::Client,
    /// A sync lock: read per request, swapped whole on refresh, never held across `.await`.
    keys: RwLock<Arc<Keys>>,
    /// Serialises refreshes (one fetch at a time); an async lock, held across the fetch.
    refresh: tokio::sync::Mutex<RefreshState>,
}

#[derive(Default)]
struct RefreshState {
    last_attempt: Option<Instant>,
    metadata: Option<Metadata>,
}

impl Issuer {
    pub(crate) fn new(issuer: String, min_refresh: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT / 2)
            .redirect(reqwest::redirect::Policy::limited(3))
            .tcp_nodelay(true)
            .build()
            .expect("a client with rustls builds");
        Issuer {
            issuer,
            local: None,
            min_refresh,
            http,
            keys: RwLock::new(Arc::new(Keys::default())),
            refresh: tokio::sync::Mutex::new(RefreshState::default()),
        }
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The key set in use now.
    pub(crate) fn keys(&self) -> Arc<Keys> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The key set after a refresh, when the one the caller saw (`seen`) lacked a key: one
    /// fetch at a time, at most one per `min_refresh`.
    pub(crate) async fn refreshed(&self, seen: &Keys) -> Arc<Keys> {
        let mut state = self.refresh.lock().await;
        let current = self.keys();
        if current.generation != seen.generation {
            return current; // someone refreshed while this one waited
        }
        if state
            .last_attempt
            .is_some_and(|t| t.elapsed() < self.min_refresh)
        {
            return current;
        }
        self.fetch(&mut state).await;
        self.keys()
    }

    /// Refreshes in the background when the keys are older than [`MAX_AGE`].
    pub(crate) fn refresh_if_stale(self: &Arc<Self>, keys: &Keys) {
        if keys.fetched.is_some_and(|t| t.elapsed() > MAX_AGE) {
            let issuer = self.clone();
            let seen = keys.generation;
            tokio::spawn(async move {
                let mut state = issuer.refresh.lock().await;
                if issuer.keys().generation == seen {
                    issuer.fetch(&mut state).await;
                }
            });
        }
    }

    /// The issuer's metadata, discovered once (and again after a failure).
    pub(crate) async fn metadata(&self) -> Option<Metadata> {
        let mut state = self.refresh.lock().await;
        if state.metadata.is_none() {
            state.metadata = self.discover().await;
        }
        state.metadata.clone()
    }

    /// Fetches metadata (if not known yet) and the key set; on failure the old keys stay.
    async fn fetch(&self, state: &mut RefreshState) {
        state.last_attempt = Some(Instant::now());
        if let Some(local) = &self.local {
            match local.jwks().await.and_then(|body| parse_jwks(&body)) {
                Ok(keys) => self.install(keys),
                Err(e) => warn!(error = %e, "own signing keys unreadable; the keys in use stay"),
            }
            return;
        }
        if state.metadata.is_none() {
            state.metadata = self.discover().await;
        }
        let Some(metadata) = &state.metadata else {
            return;
        };
        match get_document(&self.http, &metadata.jwks_uri).await {
            Ok(body) => match parse_jwks(&body) {
                Ok(keys) => {
                    info!(keys = keys.len(), jwks_uri = %metadata.jwks_uri, "issuer's signing keys loaded");
                    self.install(keys);
                }
                Err(e) => {
                    warn!(jwks_uri = %metadata.jwks_uri, error = %e, "issuer's key set unusable; the keys in use stay")
                }
            },
            Err(e) => {
                warn!(jwks_uri = %metadata.jwks_uri, error = %e, "issuer's key set not fetched; the keys in use stay");
                // The jwks_uri may have moved: discover again next time.
                state.metadata = None;
            }
        }
    }

    /// Puts a freshly read key set in use.
    fn install(&self, keys: Vec<Key>) {
        let mut slot = self.keys.write().unwrap_or_else(|e| e.into_inner());
        *slot = Arc::new(Keys {
            keys,
            fetched: Some(Instant::now()),
            generation: slot.generation + 1,
        });
    }

    /// Finds the issuer's metadata: RFC 8414's well-known URL (path inserted), then OpenID
    /// Connect's (inserted, then appended), as the MCP spec's clients do. The document must
    /// name this very issuer.
    async fn discover(&self) -> Option<Metadata> {
        for url in discovery_urls(&self.issuer) {
            let body = match get_document(&self.http, &url).await {
                Ok(body) => body,
                Err(e) => {
                    tracing::debug!(%url, error = %e, "no issuer metadata here");
                    continue;
                }
            };
            match serde_json::from_slice::<Metadata>(&body) {
                Ok(m) if m.issuer == self.issuer => {
                    info!(%url, "issuer metadata found");
                    return Some(m);
                }
                Ok(m) => {
                    warn!(%url, named = %m.issuer, expected = %self.issuer, "issuer metadata names another issuer; ignored")
                }
                Err(e) => warn!(%url, error = %e, "issuer metadata unreadable"),
            }
        }
        warn!(issuer = %self.issuer, "issuer metadata not found (is the issuer up? is --oauth-issuer its exact identifier?)");
        None
    }

    /// Loads the keys at start, retrying with backoff until it works or `shutdown`.
    pub(crate) async fn warm_up(self: Arc<Self>, shutdown: CancellationToken) {
        let mut wait = Duration::from_secs(1);
        loop {
            {
                let mut state = self.refresh.lock().await;
                if self.keys().loaded() {
                    return;
                }
                self.fetch(&mut state).await;
            }
            if self.keys().loaded() {
                return;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(Duration::from_secs(60));
        }
    }
}

/// Where an issuer's metadata may be, in the order the MCP spec's clients try.
pub(crate) fn discovery_urls(issuer: &str) -> Vec<String> {
    let Ok(url) = Url::parse(issuer) else {
        return Vec::new();
    };
    let origin = url.origin().ascii_serialization();
    let path = url.path().trim_end_matches('/');
    if path.is_empty() {
        vec![
            format!("{origin}/.well-known/oauth-authorization-server"),
            format!("{origin}/.well-known/openid-configuration"),
        ]
    } else {
        vec![
            format!("{origin}/.well-known/oauth-authorization-server{path}"),
            format!("{origin}/.well-known/openid-configuration{path}"),
            format!("{origin}{path}/.well-known/openid-configuration"),
        ]
    }
}

/// GETs a JSON document of at most [`MAX_DOCUMENT`] bytes.
async fn get_document(http: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let response = http
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    read_capped(response).await
}

/// The body of a 200 answer, at most [`MAX_DOCUMENT`] bytes.
pub(crate) async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| e.without_url().to_string())?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT {
            return Err(format!("larger than {MAX_DOCUMENT} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_order() {
        assert_eq!(
            discovery_urls("https://id.example.com"),
            [
                "https://id.example.com/.well-known/oauth-authorization-server",
                "https://id.example.com/.well-known/openid-configuration"
            ]
        );
        assert_eq!(
            discovery_urls("https://id.example.com/realms/mcp/"),
            [
                "https://id.example.com/.well-known/oauth-authorization-server/realms/mcp",
                "https://id.example.com/.well-known/openid-configuration/realms/mcp",
                "https://id.example.com/realms/mcp/.well-known/openid-configuration"
            ]
        );
    }

    #[test]
    fn a_key_set_keeps_signature_keys_only() {
        let jwks = br#"{"keys":[
            {"kty":"EC","crv":"P-256","kid":"ec","use":"sig","alg":"ES256",
             "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"RSA","kid":"enc","use":"enc","alg":"RSA-OAEP","n":"AQAB","e":"AQAB"},
            {"kty":"oct","kid":"hmac","k":"c2VjcmV0"},
            {"kty":"unknown","kid":"x"},
            {"kty":"OKP","crv":"Ed25519","kid":"ed","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
        ]}"#;
        let keys = Keys {
            keys: parse_jwks(jwks).unwrap(),
            fetched: Some(Instant::now()),
            generation: 1,
        };
        let kids: Vec<_> = keys.keys.iter().map(|k| k.kid.clone().unwrap()).collect();
        assert_eq!(kids, ["ec", "ed"]);
        assert_eq!(keys.candidates(Some("ec"), Algorithm::ES256).len(), 1);
        assert!(keys.candidates(Some("ec"), Algorithm::ES384).is_empty());
        assert!(keys.candidates(Some("ec"), Algorithm::RS256).is_empty());
        assert_eq!(keys.candidates(None, Algorithm::EdDSA).len(), 1);
        assert!(keys.candidates(Some("nope"), Algorithm::ES256).is_empty());
        assert!(parse_jwks(b"[]").is_err());
    }
}
