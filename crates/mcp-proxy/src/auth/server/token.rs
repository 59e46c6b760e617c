//! The token endpoint (`POST /oauth/token`): an authorization code with its PKCE verifier,
//! or a refresh token, for an access token bound to one pool's resource URL (`aud`) and
//! its scopes; and revocation (RFC 7009, `POST /oauth/revoke`).
//!
//! Codes are single use: taking one from the store is atomic, and a code presented again
//! revokes the refresh family it started. Refresh tokens rotate: each use returns a new one
//! and retires the old; an old one presented again (stolen, replayed) revokes its whole
//! family, so both the thief and the client must sign in again. Access tokens name their
//! family (`fid`), so a revoked family's access tokens stop working at once too.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::digest::{digest, SHA256};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use super::authorize::CodeGrant;
use super::clients::{state_error, Client};
use super::store::{unix_now, Kind, Put};
use super::{digest_key, oauth_error, random_token, AuthServer};
use crate::state::AppState;
use crate::Error;

/// The largest token or revocation request read.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// What a refresh token stands for (kept until it expires, also after rotation, so a reuse
/// is recognised).
#[derive(Debug, Serialize, Deserialize)]
struct RefreshGrant {
    family: String,
    client_id: String,
    resource: String,
    scopes: Vec<String>,
    subject: String,
}

fn invalid_grant(why: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", why)
}

/// Whether `verifier` is the PKCE (S256) verifier of `challenge`.
fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    let computed = URL_SAFE_NO_PAD.encode(digest(&SHA256, verifier.as_bytes()));
    well_formed && bool::from(computed.as_bytes().ct_eq(challenge.as_bytes()))
}

fn read_form(body: &Bytes) -> Option<HashMap<String, String>> {
    (body.len() <= MAX_FORM_BYTES).then(|| url::form_urlencoded::parse(body).into_owned().collect())
}

/// What `/oauth/token` and `/oauth/revoke` both start with: the running server, the form,
/// and the client it authenticates; else the answer that refuses the request.
async fn client_request<'a>(
    state: &'a AppState,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<
    (
        &'a std::sync::Arc<AuthServer>,
        HashMap<String, String>,
        Client,
    ),
    Response,
> {
    let Some(server) = super::of(state) else {
        return Err(super::not_running());
    };
    let Some(form) = read_form(body) else {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the request is too large",
        ));
    };
    let field = |k: &str| form.get(k).map(String::as_str);
    match server
        .authenticate_client(headers, field("client_id"), field("client_secret"))
        .await
    {
        Ok(client) => Ok((server, form, client)),
        Err(refusal) => {
            info!("token or revocation request refused: client authentication failed");
            Err(refusal.into_response())
        }
    }
}

/// `POST /oauth/token`.
pub(crate) async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (server, form, client) = match client_request(&state, &headers, &body).await {
        Ok(parts) => parts,
        Err(refused) => return refused,
    };
    let field = |k: &str| form.get(k).map(String::as_str);
    let result = match field("grant_type") {
        Some("authorization_code") => server.exchange_code(&client, &form).await,
        Some("refresh_token") => server.refresh(&client, &form).await,
        Some(_) => Ok(oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be authorization_code or refresh_token",
        )),
        None => Ok(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "grant_type is missing",
        )),
    };
    result.unwrap_or_else(state_error)
}

impl AuthServer {
    async fn exchange_code(
        &self,
        client: &Client,
        form: &HashMap<String, String>,
    ) -> Result<Response, Error> {
        let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
        let key = digest_key(field("code"));
        let Some(grant) = self.store.take(Kind::Code, &key).await? else {
            // A code used twice: what its first use gave is revoked (RFC 6749 §4.1.2).
            if let Some(family) = self.store.get(Kind::UsedCode, &key).await? {
                warn!("an authorization code was used twice; the tokens it gave are revoked");
                self.revoke_family(&family).await?;
            }
            return Ok(invalid_grant(
                "the code is unknown, expired or already used",
            ));
        };
        let Ok(grant) = serde_json::from_str::<CodeGrant>(&grant) else {
            return Ok(invalid_grant("the code is unreadable"));
        };
        if grant.client_id != client.client_id {
            return Ok(invalid_grant("the code was issued to another client"));
        }
        if form
            .get("redirect_uri")
            .is_some_and(|r| *r != grant.redirect_uri)
        {
            return Ok(invalid_grant(
                "redirect_uri differs from the authorization request's",
            ));
        }
        if !pkce_matches(field("code_verifier"), &grant.challenge) {
            return Ok(invalid_grant("the PKCE code_verifier does not match"));
        }
        if form.get("resource").is_some_and(|r| *r != grant.resource) {
            return Ok(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_target",
                "resource differs from the authorization request's",
            ));
        }
        let family = random_token(18);
        self.store
            .put(
                Kind::UsedCode,
                &key,
                family.clone(),
                self.settings.code_lifetime * 10,
                Put::Always,
            )
            .await?;
        let grant = RefreshGrant {
            family,
            client_id: grant.client_id,
            resource: grant.resource,
            scopes: grant.scopes,
            subject: grant.subject,
        };
        info!(client = %client.display_name(), subject = %grant.subject, "tokens issued for a code");
        self.issue(client, grant).await
    }

    async fn refresh(
        &self,
        client: &Client,
        form: &HashMap<String, String>,
    ) -> Result<Response, Error> {
        let presented = form
            .get("refresh_token")
            .map(String::as_str)
            .unwrap_or_default();
        let key = digest_key(presented);
        let Some(grant) = self.store.get(Kind::Refresh, &key).await? else {
            return Ok(invalid_grant("the refresh token is unknown or expired"));
        };
        let Ok(mut grant) = serde_json::from_str::<RefreshGrant>(&grant) else {
            return Ok(invalid_grant("the refresh token is unreadable"));
        };
        if grant.client_id != client.client_id {
            return Ok(invalid_grant(
                "the refresh token was issued to another client",
            ));
        }
        if self.store.get(Kind::Family, &grant.family).await?.is_none() {
            return Ok(invalid_grant("the refresh token has been revoked"));
        }
        // A request refused for what it asks leaves the token usable: checked before the take.
        if form.get("resource").is_some_and(|r| *r != grant.resource) {
            return Ok(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_target",
                "a refresh token serves the resource it was issued for",
            ));
        }
        if let Some(scope) = form.get("scope") {
            let asked: Vec<&str> = scope.split_whitespace().collect();
            if asked.iter().any(|s| !grant.scopes.iter().any(|g| g == s)) {
                return Ok(oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    "a refresh cannot widen the scopes",
                ));
            }
            grant.scopes.retain(|g| asked.contains(&g.as_str()));
        }
        // Atomic: of two uses of one token, one rotates it and the other is a reuse.
        if self.store.take(Kind::RefreshLive, &key).await?.is_none() {
            warn!(subject = %grant.subject, client = %client.display_name(), "a rotated refresh token was used again: its family is revoked");
            self.revoke_family(&grant.family).await?;
            return Ok(invalid_grant(
                "the refresh token was already used; sign in again",
            ));
        }
        self.issue(client, grant).await
    }

    /// Issues an access token and a new refresh token of `grant`'s family (renewing the
    /// family and the client's registration).
    async fn issue(&self, client: &Client, grant: RefreshGrant) -> Result<Response, Error> {
        let lifetime = self.settings.refresh_lifetime;
        self.store
            .put(
                Kind::Family,
                &grant.family,
                grant.subject.clone(),
                lifetime,
                Put::Always,
            )
            .await?;
        let refresh = random_token(32);
        let key = digest_key(&refresh);
        let value = serde_json::to_string(&grant).expect("serializes");
        self.store
            .put(Kind::Refresh, &key, value, lifetime, Put::Always)
            .await?;
        self.store
            .put(Kind::RefreshLive, &key, "1".into(), lifetime, Put::Always)
            .await?;
        if !client.from_document {
            self.save_client(client, false).await?;
        }
        let now = unix_now();
        let expires_in = self.settings.access_lifetime.as_secs();
        let claims = json!({
            "iss": self.issuer(),
            "sub": grant.subject,
            "aud": grant.resource,
            "client_id": client.client_id,
            "scope": grant.scopes.join(" "),
            "iat": now,
            "nbf": now,
            "exp": now + expires_in,
            "jti": random_token(16),
            "fid": grant.family,
        });
        let access = self.keys.current().await?.sign(&claims)?;
        let body = json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": expires_in,
            "refresh_token": refresh,
            "scope": grant.scopes.join(" "),
        });
        Ok((
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::PRAGMA, "no-cache"),
            ],
            Json(body),
        )
            .into_response())
    }

    /// Revokes `token` if this client holds it: a refresh token's whole family, or one
    /// access token (until it would have expired).
    async fn revoke(&self, client: &Client, token: &str) -> Result<(), Error> {
        if let Some(grant) = self.store.get(Kind::Refresh, &digest_key(token)).await? {
            if let Ok(grant) = serde_json::from_str::<RefreshGrant>(&grant) {
                if grant.client_id == client.client_id {
                    self.revoke_family(&grant.family).await?;
                    info!(client = %client.display_name(), "refresh token revoked (with its family)");
                }
            }
            return Ok(());
        }
        if let Some((jti, exp)) = self.own_access_token(token, &client.client_id).await? {
            let ttl = std::time::Duration::from_secs(exp.saturating_sub(unix_now()).max(1) + 60);
            self.store
                .put(Kind::RevokedToken, &jti, "1".into(), ttl, Put::Always)
                .await?;
            self.valid.clear();
            info!(client = %client.display_name(), "access token revoked");
        }
        Ok(())
    }

    /// The `jti` and `exp` of `token` when it is an access token this server signed for
    /// `client_id` (expiry not checked: revoking an expired token is harmless).
    async fn own_access_token(
        &self,
        token: &str,
        client_id: &str,
    ) -> Result<Option<(String, u64)>, Error> {
        #[derive(Deserialize)]
        struct Claims {
            jti: Option<String>,
            exp: u64,
            client_id: Option<String>,
        }
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return Ok(None);
        };
        let set = self.keys.jwks().await?;
        let jwks: jsonwebtoken::jwk::JwkSet =
            serde_json::from_value(set).map_err(|e| Error::AuthState(e.to_string()))?;
        let Some(jwk) = header.kid.as_deref().and_then(|kid| jwks.find(kid)) else {
            return Ok(None);
        };
        let Ok(key) = jsonwebtoken::DecodingKey::from_jwk(jwk) else {
            return Ok(None);
        };
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.set_issuer(&[self.issuer()]);
        validation.set_required_spec_claims(&["exp", "iss"]);
        Ok(jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .ok()
            .filter(|d| d.claims.client_id.as_deref() == Some(client_id))
            .and_then(|d| Some((d.claims.jti?, d.claims.exp))))
    }
}

/// `POST /oauth/revoke` (RFC 7009): 200 whether or not the token was known.
pub(crate) async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (server, form, client) = match client_request(&state, &headers, &body).await {
        Ok(parts) => parts,
        Err(refused) => return refused,
    };
    let field = |k: &str| form.get(k).map(String::as_str);
    let Some(token) = field("token").filter(|t| !t.is_empty()) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "token is missing",
        );
    };
    match server.revoke(&client, token).await {
        Ok(()) => ([(header::CACHE_CONTROL, "no-store")], StatusCode::OK).into_response(),
        Err(e) => state_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_is_s256_of_the_verifier() {
        // RFC 7636 appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches(challenge, challenge), "plain is not accepted");
        assert!(!pkce_matches("short", challenge));
        assert!(!pkce_matches(&format!("{verifier}x"), challenge));
    }
}
