//! What the operator tells the resource server: the public URL, the issuer, the scopes each
//! pool (and tool) needs, audience overrides, introspection credentials; and what follows
//! from them (each pool's resource URL, its metadata URL, the audiences it accepts).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use mcp_protocol::wire::is_valid_pool_name;
use reqwest::Url;

use crate::auth::DEFAULT_POOL_NAME;
use crate::Error;

/// Clock skew tolerated on `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// The signature algorithms accepted (asymmetric only: a token signed with a shared secret, or
/// `none`, is refused whatever its key set says).
pub const ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Where the well-known metadata of a protected resource lives (RFC 9728): this prefix, then
/// the resource's path.
pub const METADATA_PREFIX: &str = "/.well-known/oauth-protected-resource";

/// The OAuth 2.1 resource server's settings (`--public-url`, `--oauth-*`).
#[derive(Clone)]
pub struct OAuthConfig {
    /// The proxy's public base URL, without a trailing slash (`https://mcp.example.com`).
    pub public_url: String,
    /// The authorization server's issuer identifier, exactly as its tokens' `iss`.
    pub issuer: String,
    /// Scopes every request needs, by pool (`""` is the default pool); `None` key = every
    /// pool without a rule of its own.
    pub scopes: BTreeMap<Option<String>, Vec<String>>,
    /// Scopes a `tools/call` of one tool needs on top of its pool's: (pool, tool) → scopes.
    pub tool_scopes: BTreeMap<(String, String), Vec<String>>,
    /// Audiences a pool accepts instead of its resource URL (providers that cannot put the
    /// resource URL in `aud`); `None` key = every pool without an override of its own.
    pub audiences: BTreeMap<Option<String>, Vec<String>>,
    /// RFC 7662 introspection for tokens that are not JWTs.
    pub introspection: Option<Introspection>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
    /// The shortest time between two fetches of the issuer's key set (a token naming an
    /// unknown key fetches it again, at most this often).
    pub min_refresh: Duration,
}

/// How the proxy introspects opaque tokens (RFC 7662).
#[derive(Clone)]
pub struct Introspection {
    /// The endpoint; `None` = the one the issuer's metadata names.
    pub endpoint: Option<String>,
    /// The proxy's client id at the authorization server.
    pub client_id: String,
    /// Its secret (HTTP Basic, `client_secret_basic`).
    pub client_secret: String,
}

impl fmt::Debug for Introspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Introspection")
            .field("endpoint", &self.endpoint)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for OAuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthConfig")
            .field("public_url", &self.public_url)
            .field("issuer", &self.issuer)
            .field("scopes", &self.scopes)
            .field("tool_scopes", &self.tool_scopes)
            .field("audiences", &self.audiences)
            .field("introspection", &self.introspection)
            .finish()
    }
}

fn bad(flag: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidConfig {
        flag,
        reason: reason.into(),
    }
}

/// Whether `url`'s host is a loopback name or address (an IP test, never a prefix test).
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// An `https` URL, or `http` on loopback only; no query, no fragment, no credentials.
fn checked_url(flag: &'static str, text: &str) -> Result<Url, Error> {
    let url = Url::parse(text.trim()).map_err(|e| bad(flag, format!("`{text}`: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(bad(
                flag,
                format!("`{text}`: http is allowed only on loopback; use https"),
            ))
        }
        other => {
            return Err(bad(
                flag,
                format!("`{text}`: scheme {other} is not http(s)"),
            ))
        }
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad(flag, format!("`{text}`: no query or fragment allowed")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(flag, format!("`{text}`: no credentials in the URL")));
    }
    Ok(url)
}

/// A pool as written in a flag: a pool name or `@default` (→ `""`).
fn pool_of(flag: &'static str, text: &str) -> Result<String, Error> {
    if text == DEFAULT_POOL_NAME {
        Ok(String::new())
    } else if is_valid_pool_name(text) {
        Ok(text.to_owned())
    } else {
        Err(bad(
            flag,
            format!(
                "`{text}` is not a pool name ([A-Za-z0-9._-]{{1,64}}) or `{DEFAULT_POOL_NAME}`"
            ),
        ))
    }
}

/// Scopes as written in a flag: comma-separated, each a scope-token of RFC 6749 (printable
/// ASCII but space, `"` and `\`).
fn scopes_of(flag: &'static str, text: &str) -> Result<Vec<String>, Error> {
    let mut scopes = Vec::new();
    for scope in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !scope
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
        {
            return Err(bad(flag, format!("`{scope}` is not a valid scope")));
        }
        if !scopes.iter().any(|s| s == scope) {
            scopes.push(scope.to_owned());
        }
    }
    Ok(scopes)
}

impl OAuthConfig {
    /// The settings for `public_url` and `issuer`, with no scopes required, no overrides, no
    /// introspection. Refuses URLs that are not https (http only on loopback).
    pub fn new(public_url: &str, issuer: &str) -> Result<Self, Error> {
        let public = checked_url("--public-url", public_url)?;
        checked_url("--oauth-issuer", issuer)?;
        Ok(OAuthConfig {
            public_url: public.as_str().trim_end_matches('/').to_owned(),
            issuer: issuer.trim().to_owned(),
            scopes: BTreeMap::new(),
            tool_scopes: BTreeMap::new(),
            audiences: BTreeMap::new(),
            introspection: None,
            leeway: DEFAULT_LEEWAY,
            min_refresh: super::keys::MIN_REFRESH,
        })
    }

    /// Adds `[POOL[/TOOL]=]SCOPE[,SCOPE...]` (`--oauth-scopes`): without `POOL=` the scopes
    /// every pool without a rule of its own needs; with `POOL/TOOL=` what a `tools/call` of
    /// that tool needs on top of its pool's.
    pub fn add_scopes(&mut self, spec: &str) -> Result<(), Error> {
        const FLAG: &str = "--oauth-scopes";
        match spec.split_once('=') {
            None => {
                self.scopes.insert(None, scopes_of(FLAG, spec)?);
            }
            Some((target, scopes)) => {
                let scopes = scopes_of(FLAG, scopes)?;
                match target.trim().split_once('/') {
                    Some((pool, tool)) if !tool.is_empty() => {
                        let pool = pool_of(FLAG, pool)?;
                        self.tool_scopes.insert((pool, tool.to_owned()), scopes);
                    }
                    Some(_) => {
                        return Err(bad(
                            FLAG,
                            format!("`{target}`: a tool name must follow `/`"),
                        ))
                    }
                    None => {
                        let pool = pool_of(FLAG, target.trim())?;
                        self.scopes.insert(Some(pool), scopes);
                    }
                }
            }
        }
        Ok(())
    }

    /// Adds `[POOL=]AUDIENCE[,AUDIENCE...]` (`--oauth-audience`): what the pool (without
    /// `POOL=`: every pool without an override) accepts in `aud` instead of its resource URL.
    pub fn add_audience(&mut self, spec: &str) -> Result<(), Error> {
        const FLAG: &str = "--oauth-audience";
        // An audience is often a URI (`api://…`, `https://…`): `POOL=` is recognised only
        // when what precedes `=` is a pool, so a URI with `=` in it stays whole.
        let (pool, audiences) = match spec.split_once('=') {
            Some((pool, rest)) if pool_of(FLAG, pool.trim()).is_ok() => {
                (Some(pool_of(FLAG, pool.trim())?), rest)
            }
            _ => (None, spec),
        };
        let audiences: Vec<String> = audiences
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        if audiences.is_empty() {
            return Err(bad(FLAG, format!("`{spec}` names no audience")));
        }
        self.audiences.insert(pool, audiences);
        Ok(())
    }

    /// Introspects tokens that are not JWTs at `endpoint` (`None`: the issuer's) with these
    /// client credentials.
    pub fn set_introspection(
        &mut self,
        endpoint: Option<&str>,
        client_id: String,
        client_secret: String,
    ) -> Result<(), Error> {
        let endpoint = endpoint
            .map(|e| checked_url("--oauth-introspection", e).map(|u| u.to_string()))
            .transpose()?;
        if client_id.is_empty() || client_secret.is_empty() {
            return Err(bad(
                "--oauth-client-id",
                "introspection needs --oauth-client-id and --oauth-client-secret",
            ));
        }
        self.introspection = Some(Introspection {
            endpoint,
            client_id,
            client_secret,
        });
        Ok(())
    }

    /// The path of `pool`'s MCP endpoint: `/mcp` or `/servers/NAME/mcp`.
    pub fn pool_path(pool: &str) -> String {
        if pool.is_empty() {
            "/mcp".to_owned()
        } else {
            format!("/servers/{pool}/mcp")
        }
    }

    /// `pool`'s resource URL: its MCP endpoint under the public URL, no trailing slash.
    pub fn resource(&self, pool: &str) -> String {
        format!("{}{}", self.public_url, Self::pool_path(pool))
    }

    /// Where `pool`'s protected resource metadata is (RFC 9728 §3.1: the well-known prefix
    /// goes between the host and the resource's path).
    pub fn metadata_url(&self, pool: &str) -> String {
        let url = Url::parse(&self.public_url).expect("checked when configured");
        let origin = url.origin().ascii_serialization();
        let base_path = url.path().trim_end_matches('/');
        format!(
            "{origin}{METADATA_PREFIX}{base_path}{}",
            Self::pool_path(pool)
        )
    }

    /// The audiences `pool` accepts: its override, else the resource URL.
    pub fn audiences(&self, pool: &str) -> Vec<String> {
        self.audiences
            .get(&Some(pool.to_owned()))
            .or_else(|| self.audiences.get(&None))
            .cloned()
            .unwrap_or_else(|| vec![self.resource(pool)])
    }

    /// The scopes every request to `pool` needs.
    pub fn pool_scopes(&self, pool: &str) -> &[String] {
        self.scopes
            .get(&Some(pool.to_owned()))
            .or_else(|| self.scopes.get(&None))
            .map_or(&[], Vec::as_slice)
    }

    /// The scopes a `tools/call` of `tool` in `pool` needs: the pool's and the tool's.
    pub fn tool_call_scopes(&self, pool: &str, tool: &str) -> Option<Vec<String>> {
        let extra = self.tool_scopes.get(&(pool.to_owned(), tool.to_owned()))?;
        let mut all = self.pool_scopes(pool).to_vec();
        all.extend(
            extra
                .iter()
                .filter(|s| !all.contains(s))
                .cloned()
                .collect::<Vec<_>>(),
        );
        Some(all)
    }

    /// Every scope `pool` may ask for (its own and its tools'), for `scopes_supported`.
    pub fn scopes_supported(&self, pool: &str) -> Vec<String> {
        let mut all = self.pool_scopes(pool).to_vec();
        for ((p, _), scopes) in &self.tool_scopes {
            if p == pool {
                for s in scopes {
                    if !all.contains(s) {
                        all.push(s.clone());
                    }
                }
            }
        }
        all
    }

    /// The host (and port, when not the scheme's default) of the public URL, which joins the
    /// allowed hosts.
    pub fn public_host(&self) -> Option<String> {
        let url = Url::parse(&self.public_url).ok()?;
        let host = url.host_str()?;
        Some(match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_rfc_9728() {
        let c = OAuthConfig::new("https://mcp.example.com/", "https://id.example.com").unwrap();
        assert_eq!(c.resource(""), "https://mcp.example.com/mcp");
        assert_eq!(
            c.resource("files"),
            "https://mcp.example.com/servers/files/mcp"
        );
        assert_eq!(
            c.metadata_url(""),
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            c.metadata_url("files"),
            "https://mcp.example.com/.well-known/oauth-protected-resource/servers/files/mcp"
        );
        let c =
            OAuthConfig::new("https://example.com:8443/proxy", "https://id.example.com").unwrap();
        assert_eq!(
            c.resource("a"),
            "https://example.com:8443/proxy/servers/a/mcp"
        );
        assert_eq!(
            c.metadata_url("a"),
            "https://example.com:8443/.well-known/oauth-protected-resource/proxy/servers/a/mcp"
        );
        assert_eq!(c.public_host().as_deref(), Some("example.com:8443"));
    }

    #[test]
    fn http_only_on_loopback() {
        assert!(OAuthConfig::new("http://127.0.0.1:9000", "http://localhost:3000").is_ok());
        assert!(OAuthConfig::new("http://[::1]:9000", "http://127.0.0.2").is_ok());
        for (public, issuer) in [
            ("http://mcp.example.com", "https://id.example.com"),
            ("https://mcp.example.com", "http://id.example.com"),
            ("https://mcp.example.com", "http://127.attacker.example"),
            ("https://mcp.example.com?x=1", "https://id.example.com"),
            ("ftp://mcp.example.com", "https://id.example.com"),
        ] {
            assert!(
                OAuthConfig::new(public, issuer).is_err(),
                "{public} {issuer}"
            );
        }
    }

    #[test]
    fn scopes_and_audiences_per_pool() {
        let mut c = OAuthConfig::new("https://p.example", "https://id.example").unwrap();
        c.add_scopes("mcp:tools").unwrap();
        c.add_scopes("files=files:read,files:write").unwrap();
        c.add_scopes("files/delete=files:admin").unwrap();
        c.add_scopes("@default/echo=echo").unwrap();
        assert_eq!(c.pool_scopes("other"), ["mcp:tools"]);
        assert_eq!(c.pool_scopes("files"), ["files:read", "files:write"]);
        assert_eq!(
            c.tool_call_scopes("files", "delete").unwrap(),
            ["files:read", "files:write", "files:admin"]
        );
        assert_eq!(
            c.tool_call_scopes("", "echo").unwrap(),
            ["mcp:tools", "echo"]
        );
        assert!(c.tool_call_scopes("files", "read").is_none());
        assert_eq!(
            c.scopes_supported("files"),
            ["files:read", "files:write", "files:admin"]
        );
        assert!(c.add_scopes("bad/=x").is_err());
        assert!(c.add_scopes("no pool=x").is_err());
        assert!(c.add_scopes("a=sc\"ope").is_err());

        assert_eq!(
            c.audiences("files"),
            ["https://p.example/servers/files/mcp"]
        );
        c.add_audience("files=api://files-app").unwrap();
        c.add_audience("api://x?a=b").unwrap();
        assert_eq!(c.audiences("files"), ["api://files-app"]);
        assert_eq!(c.audiences(""), ["api://x?a=b"]);
    }
}
