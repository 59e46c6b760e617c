//! What a web page must not do with the client routes: DNS rebinding (a `Host` that is not
//! ours, on `/mcp`), cross-site posts (an `Origin` that is neither an allowed host nor a CORS
//! origin, on `/mcp` and `/message`), and "simple" requests that skip the CORS preflight (a
//! POST body whose `Content-Type` is not `application/json`: a page can send `text/plain`
//! to any URL without asking).
//!
//! The seed's client sends no `Origin` and keeps working; `/message` has no `Host` check (the
//! seed's clients reach it by any name).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use mcp_protocol::streamable::HostAllowList;

use crate::{Config, Error};

/// Who may reach the client routes, and how strictly.
#[derive(Debug)]
pub(crate) struct Guard {
    hosts: HostAllowList,
    /// CORS origins (exact), which are acceptable `Origin`s even when not allowed hosts.
    origins: Vec<String>,
    any_origin: bool,
    /// Check `Host` too (`/mcp`, which the MCP transport spec asks to defend).
    check_host: bool,
}

impl Guard {
    /// The guard of `/mcp` (`check_host`) or `/message`.
    pub(crate) fn new(config: &Config, check_host: bool) -> Arc<Self> {
        Arc::new(Guard {
            // `--public-url`'s host is the name clients use: allowed as if listed.
            hosts: HostAllowList::new(
                config
                    .allowed_hosts
                    .iter()
                    .cloned()
                    .chain(config.oauth.as_ref().and_then(|o| o.config().public_host())),
            ),
            origins: config
                .cors_origins
                .iter()
                .map(|o| normalize_origin(o))
                .collect(),
            any_origin: config.cors_origins.iter().any(|o| o.trim() == "*"),
            check_host,
        })
    }

    /// Whether a request with this `Host` (checked only when `check_host`) and `Origin` may pass.
    pub(crate) fn allows(&self, host: Option<&str>, origin: Option<&str>) -> bool {
        // HTTP/1.0 requests may lack Host; they carry nothing a rebinding page could forge.
        let host_ok = !self.check_host || host.is_none_or(|h| self.hosts.allows_host(h));
        let origin_ok = match origin {
            None => true,
            Some(o) => {
                self.any_origin
                    || self.hosts.allows_origin(Some(o))
                    || self.origins.contains(&normalize_origin(o))
            }
        };
        host_ok && origin_ok
    }
}

#[cfg(test)]
impl Guard {
    /// Whether `host` passes the Host check (tests of the configuration).
    pub(crate) fn allows_host_for_tests(&self, host: &str) -> bool {
        self.allows(Some(host), None)
    }
}

fn normalize_origin(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// Whether a `Content-Type` names JSON: `application/json`, any case, any parameters.
pub(crate) fn is_json_content_type(value: Option<&str>) -> bool {
    value.is_some_and(|v| {
        v.split(';')
            .next()
            .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
    })
}

/// 403 (JSON-RPC -32000) for a Host or Origin that is not allowed; 415 for a POST whose body
/// is not declared JSON.
pub(crate) async fn check(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if !guard.allows(host, origin) {
        tracing::info!(host, origin, "refused: Host or Origin not allowed");
        return Error::Forbidden.with_id(None).into_response();
    }
    if req.method() == Method::POST
        && !is_json_content_type(
            headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
        )
    {
        return Error::UnsupportedMediaType.with_id(None).into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types_are_recognised_in_any_case_with_parameters() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            " application/json ;charset=UTF-8",
        ] {
            assert!(is_json_content_type(Some(ok)), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/jsonp",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "",
        ] {
            assert!(!is_json_content_type(Some(bad)), "{bad}");
        }
        assert!(!is_json_content_type(None));
    }

    #[test]
    fn message_checks_origin_but_not_host() {
        let config = Config::default();
        let message = Guard::new(&config, false);
        assert!(message.allows(Some("proxy.example.com"), None));
        assert!(!message.allows(None, Some("http://evil.example")));
        assert!(message.allows(None, Some("http://localhost:9000")));
        let mcp = Guard::new(&config, true);
        assert!(!mcp.allows(Some("proxy.example.com"), None));
    }

    #[test]
    fn cors_origins_are_acceptable_origins() {
        let config = Config {
            cors_origins: vec!["https://app.example/".into()],
            ..Config::default()
        };
        let g = Guard::new(&config, false);
        assert!(g.allows(None, Some("https://APP.example")));
        assert!(!g.allows(None, Some("https://app.example.evil")));
    }
}
