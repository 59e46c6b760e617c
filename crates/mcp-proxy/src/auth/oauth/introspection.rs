//! RFC 7662 token introspection, for access tokens that are not JWTs: the proxy asks the
//! authorization server (with its own client credentials) whether a token is active and what
//! it grants, and keeps a positive answer for a short while.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mcp_protocol::wire::Identity;
use serde::Deserialize;

use super::config::{Introspection, OAuthConfig};
use super::keys::{read_capped, Issuer};
use super::validate::{Claims, StringOrList};
use super::{Refusal, TokenId};

/// How long an active answer is trusted (a revoked token stops working within this).
pub const CACHE_FOR: Duration = Duration::from_secs(30);
/// Answers kept at most (the oldest go first when full).
const CACHE_SIZE: usize = 10_000;

/// Active answers by token digest. A sync lock: lookups and inserts only, never an `.await`.
#[derive(Default)]
pub(crate) struct Cache {
    answers: Mutex<HashMap<TokenId, Cached>>,
}

/// An active answer: until when it is trusted, the audiences it names, who it names.
#[derive(Clone)]
struct Cached {
    until: Instant,
    aud: Vec<String>,
    identity: Identity,
}

/// What the proxy reads of an introspection answer.
#[derive(Deserialize)]
struct Answer {
    active: bool,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    aud: Option<StringOrList>,
    #[serde(flatten)]
    claims: Claims,
}

impl Cache {
    /// The identity of an opaque `token` valid for `audiences`, from the cache or the
    /// authorization server.
    pub(crate) async fn introspect(
        &self,
        issuer: &Issuer,
        settings: &Introspection,
        config: &OAuthConfig,
        token: &str,
        audiences: &[String],
    ) -> Result<Identity, Refusal> {
        let key = TokenId::of(token);
        let now = Instant::now();
        if let Some(hit) = self.lock().get(&key).filter(|c| c.until > now).cloned() {
            // The answer is the token's; whether it fits this pool is checked each time.
            if !hit.aud.iter().any(|a| audiences.contains(a)) {
                return Err(Refusal::InvalidToken(
                    "the token is for another resource (aud)",
                ));
            }
            return Ok(hit.identity);
        }
        let endpoint = match &settings.endpoint {
            Some(e) => e.clone(),
            None => issuer
                .metadata()
                .await
                .and_then(|m| m.introspection_endpoint)
                .ok_or(Refusal::Unavailable)?,
        };
        let response = issuer
            .http()
            .post(&endpoint)
            .basic_auth(&settings.client_id, Some(&settings.client_secret))
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(error = %e.without_url(), "token introspection failed");
                Refusal::Unavailable
            })?;
        let body = read_capped(response).await.map_err(|e| {
            tracing::warn!(error = %e, "token introspection failed");
            Refusal::Unavailable
        })?;
        let answer: Answer = serde_json::from_slice(&body).map_err(|e| {
            tracing::warn!(error = %e, "token introspection answer unreadable");
            Refusal::Unavailable
        })?;
        let (aud, identity) = check(answer, config, audiences, unix_now())?;
        let mut cache = self.lock();
        if cache.len() >= CACHE_SIZE {
            cache.retain(|_, c| c.until > now);
            if cache.len() >= CACHE_SIZE {
                cache.clear();
            }
        }
        cache.insert(
            key,
            Cached {
                until: now + CACHE_FOR,
                aud,
                identity: identity.clone(),
            },
        );
        Ok(identity)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TokenId, Cached>> {
        self.answers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The checks a JWT gets, on an introspection answer: active, in its lifetime, from the
/// issuer, for this resource.
fn check(
    answer: Answer,
    config: &OAuthConfig,
    audiences: &[String],
    now: u64,
) -> Result<(Vec<String>, Identity), Refusal> {
    if !answer.active {
        return Err(Refusal::InvalidToken("the token is not active"));
    }
    let leeway = config.leeway.as_secs();
    if answer.exp.is_some_and(|exp| exp + leeway < now) {
        return Err(Refusal::InvalidToken("the token has expired"));
    }
    if answer.nbf.is_some_and(|nbf| nbf > now + leeway) {
        return Err(Refusal::InvalidToken("the token is not valid yet"));
    }
    if answer
        .claims
        .iss
        .as_ref()
        .is_some_and(|iss| *iss != config.issuer)
    {
        return Err(Refusal::InvalidToken("the token is from another issuer"));
    }
    let aud = match &answer.aud {
        Some(StringOrList::One(a)) => vec![a.clone()],
        Some(StringOrList::List(l)) => l.clone(),
        None => Vec::new(),
    };
    if !aud.iter().any(|a| audiences.contains(a)) {
        return Err(Refusal::InvalidToken(
            "the token is for another resource (aud)",
        ));
    }
    Ok((aud, answer.claims.identity(&config.issuer)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(json: &str) -> Answer {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn answers_are_checked_like_jwts() {
        let config = OAuthConfig::new("https://p.example", "https://id.example").unwrap();
        let aud = config.audiences("");
        let ok = r#"{"active":true,"iss":"https://id.example","aud":"https://p.example/mcp","sub":"u","client_id":"c","scope":"a b","exp":2000}"#;
        let (_, id) = check(answer(ok), &config, &aud, 1000).unwrap();
        assert_eq!(
            (id.subject.as_deref(), id.client_id.as_deref()),
            (Some("u"), Some("c"))
        );
        assert_eq!(id.scopes, ["a", "b"]);
        assert!(check(answer(ok), &config, &aud, 3000).is_err(), "expired");
        assert!(check(answer(r#"{"active":false}"#), &config, &aud, 1000).is_err());
        let other = r#"{"active":true,"aud":["https://p.example/servers/x/mcp"]}"#;
        assert!(
            check(answer(other), &config, &aud, 1000).is_err(),
            "another pool"
        );
        let foreign = r#"{"active":true,"iss":"https://evil","aud":"https://p.example/mcp"}"#;
        assert!(check(answer(foreign), &config, &aud, 1000).is_err());
        let no_aud = r#"{"active":true,"iss":"https://id.example"}"#;
        assert!(check(answer(no_aud), &config, &aud, 1000).is_err());
    }
}
