//! The proxy as an OAuth 2.1 resource server (the MCP authorization spec, 2025-11-25 and
//! 2026-07-28): access tokens from an existing identity provider open the client routes.
//!
//! Each pool is a protected resource of its own: its resource URL is its MCP endpoint under
//! `--public-url` (`https://mcp.example.com/servers/files/mcp`), its metadata (RFC 9728) is
//! served under `/.well-known/oauth-protected-resource/…`, and a token is accepted on the
//! pool's routes (`/mcp`, `/message` and their `/servers/NAME/…` forms) only when its `aud`
//! names that URL (or the pool's `--oauth-audience` override). Tokens are JWTs checked against
//! the issuer's JWKS (`keys`, `validate`), or opaque tokens introspected (`introspection`).
//!
//! The token never reaches the server: modern registrations get who is calling (subject,
//! client id, scopes) on each request item instead. Static client tokens keep working beside
//! OAuth; server tokens are unchanged.
//!
//! # Layout
//! - `config`: [`OAuthConfig`] (flags) and what follows from it: resource and metadata URLs,
//!   audiences, scopes per pool and per tool.
//! - `keys`: the issuer's metadata and key set, fetched lazily and cached.
//! - `validate`: one JWT's checks, and the identity it carries.
//! - `introspection`: RFC 7662 for opaque tokens.
//! - `metadata`: the protected resource metadata routes.
//! - here: [`OAuth`], the verdict the outer layer leaves on each client request, and the
//!   challenges (`WWW-Authenticate`) of the refusals.

mod config;
mod introspection;
mod keys;
pub(crate) mod metadata;
mod validate;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use mcp_protocol::jsonrpc::Message;
use mcp_protocol::wire::Identity;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use config::{Introspection, OAuthConfig, ALGORITHMS, DEFAULT_LEEWAY, METADATA_PREFIX};
pub use introspection::CACHE_FOR as INTROSPECTION_CACHE_FOR;
pub use keys::{LocalIssuer, MAX_AGE, MIN_REFRESH};

use super::{bearer, client_pool, Auth, TokenId, TokenKind};
use crate::routes::{self, Surface};
use crate::Error;

/// The resource server: its settings and the issuer's cached keys; shared by every request.
pub struct OAuth {
    config: OAuthConfig,
    issuer: Arc<keys::Issuer>,
    introspection: introspection::Cache,
}

impl std::fmt::Debug for OAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth")
            .field("config", &self.config)
            .finish()
    }
}

/// A client the authorization server vouched for: the identity its token names, and a stable
/// id for per-caller quotas and rate limits (its issuer and subject, never the token).
#[derive(Clone, Debug)]
pub struct Authenticated {
    /// Who is calling, as request items carry it.
    pub identity: Arc<Identity>,
    /// Keys the caller's rate bucket and session quota.
    pub id: TokenId,
}

/// What the outer layer decided about a client request's credentials, left in its
/// extensions for the rate limiter (which keys on it), the cluster relay and the route's own
/// check (which answers a refusal). Absent when the request carried a static client token.
#[derive(Clone, Debug)]
pub(crate) enum Verdict {
    /// A valid access token for this pool, with the scopes it needs.
    Accepted(Authenticated),
    /// Refused; answered by the route's check, inside the rate limit and CORS.
    Refused(Challenge),
}

/// Why a request's credentials are refused, before it is worded for the pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No token (RFC 6750: no `error` attribute).
    Missing,
    /// A malformed request: a token in the query string.
    InvalidRequest(&'static str),
    /// A token that is not valid for this resource.
    InvalidToken(&'static str),
    /// A valid token without every scope the request needs (all of them named).
    InsufficientScope(Vec<String>),
    /// The issuer's keys (or its introspection endpoint) could not be reached.
    Unavailable,
}

/// A refusal worded for the client: status, `WWW-Authenticate`, JSON-RPC message.
#[derive(Clone, Debug)]
pub struct Challenge {
    /// 400, 401, 403 or 503.
    pub status: StatusCode,
    /// The `WWW-Authenticate` header (none on 503).
    pub www_authenticate: Option<HeaderValue>,
    /// The JSON-RPC error's message.
    pub message: String,
}

/// Quotes a `WWW-Authenticate` parameter value (RFC 9110 quoted-string).
fn quoted(value: &str) -> String {
    let escaped: String = value
        .chars()
        .filter(|c| !c.is_control())
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    format!("\"{escaped}\"")
}

impl OAuth {
    /// A resource server with these settings; nothing is fetched until
    /// [`OAuth::spawn_warm_up`] or the first token.
    pub fn new(config: OAuthConfig) -> Self {
        OAuth {
            issuer: Arc::new(keys::Issuer::new(config.issuer.clone(), config.min_refresh)),
            introspection: introspection::Cache::default(),
            config,
        }
    }

    /// A resource server for tokens of `local`, the authorization server in this process
    /// (`config.issuer` is its issuer): keys read directly, revocations honoured at once.
    pub fn with_local_issuer(config: OAuthConfig, local: Arc<dyn LocalIssuer>) -> Self {
        let mut issuer = keys::Issuer::new(config.issuer.clone(), config.min_refresh);
        issuer.local = Some(local);
        OAuth {
            issuer: Arc::new(issuer),
            introspection: introspection::Cache::default(),
            config,
        }
    }

    /// Its settings.
    pub fn config(&self) -> &OAuthConfig {
        &self.config
    }

    /// Loads the issuer's keys in the background, retrying with backoff until they load or
    /// `shutdown`: the proxy serves meanwhile (tokens wait for the keys on first use).
    pub fn spawn_warm_up(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.issuer.clone().warm_up(shutdown))
    }

    /// Checks `token` for `pool`: valid, for this pool's resource, with the pool's scopes.
    pub(crate) async fn authenticate(
        &self,
        token: &str,
        pool: &str,
    ) -> Result<Authenticated, Refusal> {
        let audiences = self.config.audiences(pool);
        let identity = match validate::header_of(token)? {
            Some((alg, kid)) => {
                let mut keys = self.issuer.keys();
                self.issuer.refresh_if_stale(&keys);
                if keys.candidates(kid.as_deref(), alg).is_empty() {
                    keys = self.issuer.refreshed(&keys).await;
                }
                let candidates = keys.candidates(kid.as_deref(), alg);
                if candidates.is_empty() {
                    return Err(if keys.loaded() {
                        Refusal::InvalidToken(
                            "the token is signed by a key the issuer does not publish",
                        )
                    } else {
                        Refusal::Unavailable
                    });
                }
                let leeway = self.config.leeway.as_secs();
                let claims = validate::verify(
                    token,
                    alg,
                    &candidates,
                    &self.config.issuer,
                    &audiences,
                    leeway,
                )?;
                if let Some(local) = &self.issuer.local {
                    match local
                        .still_valid(claims.jti.as_deref(), claims.fid.as_deref())
                        .await
                    {
                        Ok(true) => {}
                        Ok(false) => {
                            return Err(Refusal::InvalidToken("the token has been revoked"))
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot check a token's revocation");
                            return Err(Refusal::Unavailable);
                        }
                    }
                }
                claims.identity(&self.config.issuer)
            }
            None => match &self.config.introspection {
                Some(settings) => {
                    self.introspection
                        .introspect(&self.issuer, settings, &self.config, token, &audiences)
                        .await?
                }
                None => {
                    return Err(Refusal::InvalidToken(
                        "the token is not a JWT (and token introspection is not configured)",
                    ))
                }
            },
        };
        let needed = self.config.pool_scopes(pool);
        if !needed.iter().all(|s| identity.scopes.contains(s)) {
            return Err(Refusal::InsufficientScope(needed.to_vec()));
        }
        let who = format!(
            "oauth\n{}\n{}",
            identity.issuer,
            identity
                .subject
                .as_deref()
                .or(identity.client_id.as_deref())
                .unwrap_or_default()
        );
        Ok(Authenticated {
            identity: Arc::new(identity),
            id: TokenId::of(&who),
        })
    }

    /// `refusal` worded for `pool`: the status and challenge RFC 6750 and RFC 9728 ask for.
    pub(crate) fn challenge(&self, refusal: &Refusal, pool: &str) -> Challenge {
        let mut params = vec![format!(
            "resource_metadata={}",
            quoted(&self.config.metadata_url(pool))
        )];
        let scope = |scopes: &[String]| format!("scope={}", quoted(&scopes.join(" ")));
        let pool_scopes = self.config.pool_scopes(pool);
        let (status, message, error) = match refusal {
            Refusal::Missing => (
                StatusCode::UNAUTHORIZED,
                "unauthorized: an access token for this server is required (Authorization: Bearer)"
                    .to_owned(),
                None,
            ),
            Refusal::InvalidRequest(why) => (
                StatusCode::BAD_REQUEST,
                format!("invalid request: {why}"),
                Some(("invalid_request", *why)),
            ),
            Refusal::InvalidToken(why) => (
                StatusCode::UNAUTHORIZED,
                format!("unauthorized: {why}"),
                Some(("invalid_token", *why)),
            ),
            Refusal::InsufficientScope(needed) => (
                StatusCode::FORBIDDEN,
                format!(
                    "forbidden: this request needs the scopes {}",
                    needed.join(" ")
                ),
                Some((
                    "insufficient_scope",
                    "the token lacks a scope this request needs",
                )),
            ),
            Refusal::Unavailable => {
                return Challenge {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    www_authenticate: None,
                    message:
                        "the authorization server cannot be reached to check the token; retry later"
                            .to_owned(),
                }
            }
        };
        match refusal {
            Refusal::InsufficientScope(needed) => params.push(scope(needed)),
            _ if !pool_scopes.is_empty() => params.push(scope(pool_scopes)),
            _ => {}
        }
        if let Some((code, description)) = error {
            params.push(format!("error={}", quoted(code)));
            params.push(format!("error_description={}", quoted(description)));
        }
        let header = format!("Bearer {}", params.join(", "));
        Challenge {
            status,
            www_authenticate: HeaderValue::from_str(&header).ok(),
            message,
        }
    }

    /// The scope check of a `tools/call` whose tool needs scopes of its own
    /// (`--oauth-scopes POOL/TOOL=…`); other messages, and callers with a static token, pass.
    pub(crate) fn check_tool_call(
        &self,
        who: Option<&Authenticated>,
        pool: &str,
        message: &Message,
    ) -> Result<(), Error> {
        let (Some(who), Message::Request(request)) = (who, message) else {
            return Ok(());
        };
        if request.method != "tools/call" || self.config.tool_scopes.is_empty() {
            return Ok(());
        }
        let Some(tool) = request
            .params
            .as_ref()
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
        else {
            return Ok(());
        };
        let Some(needed) = self.config.tool_call_scopes(pool, tool) else {
            return Ok(());
        };
        if needed.iter().all(|s| who.identity.scopes.contains(s)) {
            return Ok(());
        }
        info!(tool, "refused: the token lacks a scope the tool needs");
        Err(Error::OAuth(
            self.challenge(&Refusal::InsufficientScope(needed), pool),
        ))
    }
}

/// Whether the query string carries an `access_token` (RFC 6750 §2.3, which the MCP spec
/// forbids: URLs end up in logs).
fn token_in_query(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|pair| pair.split('=').next() == Some("access_token"))
    })
}

/// What the outer layer needs: the resource server and the static tokens beside it.
#[derive(Clone, Debug)]
pub(crate) struct Gate {
    pub(crate) oauth: Arc<OAuth>,
    pub(crate) auth: Auth,
}

impl Gate {
    async fn verdict(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        pool: &str,
    ) -> Option<Verdict> {
        let refused = |r: Refusal| Some(Verdict::Refused(self.oauth.challenge(&r, pool)));
        if token_in_query(query) {
            return refused(Refusal::InvalidRequest(
                "access tokens are not accepted in the query string",
            ));
        }
        let Some(token) = bearer(headers) else {
            return refused(Refusal::Missing);
        };
        if let Ok(Some(_)) = self.auth.check(TokenKind::Client, headers) {
            return None; // a static client token: the route's own check decides
        }
        match self.oauth.authenticate(token, pool).await {
            Ok(who) => Some(Verdict::Accepted(who)),
            Err(r) => {
                info!(reason = ?r, "refused: access token");
                refused(r)
            }
        }
    }
}

/// The outer layer of every route (outside the rate limit, which keys on its verdict): on
/// client routes of a pool, checks the access token once and leaves the [`Verdict`] on the
/// request. CORS preflights carry no token and pass.
pub(crate) async fn authenticate(
    State(gate): State<Gate>,
    mut req: Request,
    next: Next,
) -> Response {
    let client_route = routes::route_of(&req)
        .is_some_and(|r| matches!(r.surface, Surface::Message | Surface::Streamable));
    if client_route && req.method() != Method::OPTIONS {
        let pool = client_pool(req.uri().path()).to_owned();
        if let Some(verdict) = gate.verdict(req.headers(), req.uri().query(), &pool).await {
            if let Verdict::Accepted(who) = &verdict {
                crate::audit::note_identity(&who.identity);
            }
            req.extensions_mut().insert(verdict);
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_follow_rfc_6750_and_9728() {
        let mut config =
            OAuthConfig::new("https://mcp.example.com", "https://id.example.com").unwrap();
        config.add_scopes("files=files:read").unwrap();
        let oauth = OAuth::new(config);
        let c = oauth.challenge(&Refusal::Missing, "files");
        assert_eq!(c.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            c.www_authenticate.unwrap(),
            "Bearer resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/servers/files/mcp\", scope=\"files:read\""
        );
        let c = oauth.challenge(&Refusal::InvalidToken("the token has expired"), "");
        assert_eq!(
            c.www_authenticate.unwrap(),
            "Bearer resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\", error=\"invalid_token\", error_description=\"the token has expired\""
        );
        let c = oauth.challenge(
            &Refusal::InsufficientScope(vec!["a".into(), "b".into()]),
            "files",
        );
        assert_eq!(c.status, StatusCode::FORBIDDEN);
        let h = c.www_authenticate.unwrap();
        assert!(
            h.to_str()
                .unwrap()
                .contains("scope=\"a b\", error=\"insufficient_scope\""),
            "{h:?}"
        );
        assert_eq!(
            oauth.challenge(&Refusal::Unavailable, "").status,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn query_tokens_are_spotted() {
        assert!(token_in_query(Some("access_token=x")));
        assert!(token_in_query(Some("a=1&access_token=x")));
        assert!(!token_in_query(Some("session_id=access_token")));
        assert!(!token_in_query(None));
        assert_eq!(quoted("a\"b\\c\n"), "\"a\\\"b\\\\c\"");
    }
}
