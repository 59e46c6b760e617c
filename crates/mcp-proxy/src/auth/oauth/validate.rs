//! Checking one JWT access token: its algorithm against the allowlist, its signature against
//! the issuer's keys, then `iss`, `exp`/`nbf` (with a small leeway), `aud` against the pool's
//! audiences; and reading who it names (subject, client, scopes).

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, Algorithm, Validation};
use mcp_protocol::wire::Identity;
use serde::Deserialize;

use super::config::ALGORITHMS;
use super::keys::Key;
use super::Refusal;

/// The claims the proxy reads beyond those `jsonwebtoken` checks.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Claims {
    #[serde(default)]
    pub(crate) iss: Option<String>,
    #[serde(default)]
    pub(crate) sub: Option<String>,
    /// RFC 9068.
    #[serde(default)]
    pub(crate) client_id: Option<String>,
    /// OpenID Connect's authorized party (Keycloak puts the client here).
    #[serde(default)]
    pub(crate) azp: Option<String>,
    /// Entra ID (v1 tokens).
    #[serde(default)]
    pub(crate) appid: Option<String>,
    /// RFC 8693 / RFC 9068: space-separated.
    #[serde(default)]
    pub(crate) scope: Option<String>,
    /// Entra ID and Okta: a space-separated string or an array.
    #[serde(default)]
    pub(crate) scp: Option<StringOrList>,
    /// The token's own id (revocation of one access token, built-in issuer).
    #[serde(default)]
    pub(crate) jti: Option<String>,
    /// The refresh family it was issued in (built-in issuer: revoked with it).
    #[serde(default)]
    pub(crate) fid: Option<String>,
}

/// A claim that is a space-separated string or an array of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum StringOrList {
    /// `"a b"`.
    One(String),
    /// `["a", "b"]`.
    List(Vec<String>),
}

impl Claims {
    /// The scopes the token grants.
    pub(crate) fn scopes(&self) -> Vec<String> {
        let words = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        match (&self.scope, &self.scp) {
            (Some(s), _) => words(s),
            (None, Some(StringOrList::One(s))) => words(s),
            (None, Some(StringOrList::List(l))) => l.clone(),
            (None, None) => Vec::new(),
        }
    }

    /// Who the token names, as request items carry it.
    pub(crate) fn identity(self, issuer: &str) -> Identity {
        let scopes = self.scopes();
        Identity {
            issuer: self.iss.unwrap_or_else(|| issuer.to_owned()),
            subject: self.sub,
            client_id: self.client_id.or(self.azp).or(self.appid),
            scopes,
        }
    }
}

/// The algorithm a token's header names, if it is a JWT at all (`Ok(None)`: not a JWT, an
/// opaque token for introspection); a JWT with an algorithm outside the allowlist is refused.
pub(crate) fn header_of(token: &str) -> Result<Option<(Algorithm, Option<String>)>, Refusal> {
    if token.split('.').count() != 3 {
        return Ok(None);
    }
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| Refusal::InvalidToken("the token is not a well-formed JWT"))?;
    if !ALGORITHMS.contains(&header.alg) {
        return Err(Refusal::InvalidToken(
            "the token's signature algorithm is not accepted",
        ));
    }
    Ok(Some((header.alg, header.kid)))
}

/// Verifies `token` with one of `keys` and checks its claims for a resource whose audiences
/// are `audiences`.
pub(crate) fn verify(
    token: &str,
    alg: Algorithm,
    keys: &[&Key],
    issuer: &str,
    audiences: &[String],
    leeway_secs: u64,
) -> Result<Claims, Refusal> {
    let mut validation = Validation::new(alg);
    validation.leeway = leeway_secs;
    validation.validate_nbf = true;
    validation.set_issuer(&[issuer]);
    validation.set_audience(audiences);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    let mut refusal = Refusal::InvalidToken("the token is signed by no key of the issuer");
    for key in keys {
        match decode::<Claims>(token, &key.key, &validation) {
            Ok(data) => return Ok(data.claims),
            Err(e) => {
                refusal = match e.kind() {
                    // Another key of the same kind may fit (tokens without `kid`).
                    ErrorKind::InvalidSignature
                    | ErrorKind::InvalidEcdsaKey
                    | ErrorKind::InvalidRsaKey(_)
                    | ErrorKind::Crypto(_) => continue,
                    ErrorKind::ExpiredSignature => Refusal::InvalidToken("the token has expired"),
                    ErrorKind::ImmatureSignature => {
                        Refusal::InvalidToken("the token is not valid yet")
                    }
                    ErrorKind::InvalidIssuer => {
                        Refusal::InvalidToken("the token is from another issuer")
                    }
                    ErrorKind::InvalidAudience => {
                        Refusal::InvalidToken("the token is for another resource (aud)")
                    }
                    ErrorKind::MissingRequiredClaim(_) => {
                        Refusal::InvalidToken("the token lacks a required claim (exp, iss, aud)")
                    }
                    _ => Refusal::InvalidToken("the token is not valid"),
                };
                return Err(refusal);
            }
        }
    }
    Err(refusal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_from_scope_or_scp() {
        let c: Claims = serde_json::from_str(r#"{"scope":"a b  c"}"#).unwrap();
        assert_eq!(c.scopes(), ["a", "b", "c"]);
        let c: Claims = serde_json::from_str(r#"{"scp":["x","y"]}"#).unwrap();
        assert_eq!(c.scopes(), ["x", "y"]);
        let c: Claims = serde_json::from_str(r#"{"scp":"x y"}"#).unwrap();
        assert_eq!(c.scopes(), ["x", "y"]);
        let c: Claims = serde_json::from_str(r#"{"azp":"kc-client","sub":"u"}"#).unwrap();
        let id = c.identity("https://id");
        assert_eq!(id.client_id.as_deref(), Some("kc-client"));
        assert_eq!(id.issuer, "https://id");
    }

    #[test]
    fn headers_outside_the_allowlist_are_refused() {
        // {"alg":"HS256","typ":"JWT"} and {"alg":"none"}
        assert!(header_of("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30.sig").is_err());
        assert!(header_of("eyJhbGciOiJub25lIn0.e30.").is_err());
        assert!(matches!(header_of("opaque-token-value"), Ok(None)));
        assert!(header_of("a.b.c").is_err());
    }
}
