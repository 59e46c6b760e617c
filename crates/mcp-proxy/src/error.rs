//! The crate's one error type and how each error looks on the wire.
//!
//! Client routes (`/message`) answer JSON-RPC error responses; reverse-client routes
//! (`/register`, `/poll`, `/response`) answer `{"error": code, "message": text}`
//! ([`WireError`]). Which face an error has follows from its variant. Details that only the
//! operator needs go to the log, never into a body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use mcp_protocol::jsonrpc::{
    ErrorCode, ErrorObject, ParseError, RequestId, Response as RpcResponse,
};
use mcp_protocol::wire::{WireError, WireErrorCode};
use serde_json::json;

/// Everything that can go wrong in the proxy, as the caller should see it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No live registration in the addressed pool (`None`: the default pool).
    #[error("no MCP server registered")]
    NoServer {
        /// The pool's name, when it is not the default pool.
        pool: Option<String>,
    },
    /// The server did not answer within the request timeout.
    #[error("request timeout")]
    RequestTimeout,
    /// The registration left, expired or died while the request was pending.
    #[error("server gone")]
    ServerGone,
    /// The proxy is shutting down; the request was failed rather than left waiting.
    #[error("proxy shutting down")]
    ShuttingDown,
    /// The client session (`Mcp-Session-Id`) is unknown or its registration is gone.
    #[error("unknown session")]
    UnknownClientSession,
    /// The body is not one JSON-RPC request or notification.
    #[error("invalid message: {0}")]
    InvalidMessage(#[from] ParseError),
    /// A JSON-RPC response was posted where only requests and notifications are taken.
    #[error("a JSON-RPC response is not accepted here")]
    ResponseNotAccepted,
    /// The pool name in the path breaks `[A-Za-z0-9._-]{1,64}`.
    #[error("invalid server name")]
    InvalidPoolName,
    /// A client message body over the limit.
    #[error("message larger than {limit} bytes")]
    MessageTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The server's final answer is not a JSON-RPC response.
    #[error("invalid response from server: {0}")]
    InvalidServerResponse(String),
    /// Era probe: no member of the pool speaks the requested protocol version.
    #[error("unsupported protocol version")]
    UnsupportedProtocolVersion,
    /// `/mcp`: the `MCP-Protocol-Version` header names a version this project does not know.
    #[error("unsupported MCP-Protocol-Version {0:?}")]
    BadVersionHeader(String),
    /// `/mcp`: a request other than `initialize` came without `Mcp-Session-Id`.
    #[error("missing Mcp-Session-Id")]
    MissingClientSession,
    /// `/mcp`: the `Accept` header allows neither JSON nor SSE (or, on GET, no SSE).
    #[error("not acceptable")]
    NotAcceptable,
    /// `/mcp`: the `Host` or `Origin` header names a host that is not allowed.
    #[error("host or origin not allowed")]
    Forbidden,
    /// A client POST whose `Content-Type` is not `application/json`.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// `/mcp`: `Last-Event-ID` names a stream this session cannot resume.
    #[error("cannot resume the stream of Last-Event-ID")]
    CannotResume,
    /// Reverse-client route: the registration's session id is unknown or malformed.
    #[error("unknown session")]
    UnknownSession,
    /// Reverse-client route: no pending request of this registration has that id.
    #[error("unknown request")]
    UnknownRequest,
    /// Reverse-client route: the body is not what the route takes.
    #[error("invalid body: {0}")]
    InvalidBody(String),
    /// Reverse-client route: the query is missing `session_id` or has a bad `timeout`.
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// The channel: an upgrade from a web page (its `Origin` is not allowed).
    #[error("origin not allowed")]
    OriginRefused,
    /// The channel, in a cluster: this instance is not the registration's home (421).
    #[error("this instance is not the registration's home")]
    Misdirected,
    /// Reverse-client route: the pool name in `/register` is invalid.
    #[error("invalid pool name")]
    InvalidName,
    /// Reverse-client route: the body is over the limit.
    #[error("body larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Client route: the client token is missing, wrong or not bound to the addressed server.
    #[error("unauthorized")]
    Unauthorized,
    /// Client route, OAuth on: the access token is missing, invalid, for another pool, or
    /// lacks a scope (401/403 with the challenge RFC 6750 and RFC 9728 ask for), or the
    /// issuer cannot be reached to check it (503).
    #[error("{}", .0.message)]
    OAuth(crate::auth::oauth::Challenge),
    /// Reverse-client route: the server token is missing or wrong, not bound to the pool, or
    /// not the token the registration was made with.
    #[error("unauthorized")]
    ServerUnauthorized,
    /// A token source (flag, environment, token file) is malformed. Never names the token.
    #[error("{origin}{}: {reason}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    TokenConfig {
        /// The flag, variable or file.
        origin: String,
        /// The file's line (1-based), when a file.
        line: Option<usize>,
        /// What is wrong.
        reason: String,
    },
    /// Reverse-client route: the caller's request rate is over its budget (429, Retry-After),
    /// or a registration holds as many polls or a token as many registrations as allowed.
    #[error("rate limited: {0}")]
    RateLimited(&'static str),
    /// Client route: the caller's request rate is over its budget (429, Retry-After).
    #[error("too many requests")]
    ClientRateLimited,
    /// Client route: the registration the message goes to has as many pending requests as
    /// allowed (503).
    #[error("server busy: too many pending requests")]
    QueueFull,
    /// `/register` (or a legacy re-adoption): `--max-registrations` are live (503).
    #[error("too many registrations: the proxy is full, retry later")]
    RegistrationsFull,
    /// `/mcp` `initialize`: the proxy, or every member of the pool, has as many client
    /// sessions as allowed (503).
    #[error("too many client sessions")]
    TooManySessions,
    /// Several instances: the instance serving this request (its pool's home) was lost, or
    /// this one lost its link to it, before the answer was complete (502).
    #[error("the proxy instance serving this request was lost")]
    InstanceLost,
    /// Several instances: Redis, which they share, cannot be reached (503); the detail is
    /// for the log only.
    #[error("cluster store unavailable: {0}")]
    ClusterUnavailable(String),
    /// The built-in authorization server's state (its file, or Redis) cannot be read or
    /// written (503); the detail is for the log only.
    #[error("authorization server state unavailable: {0}")]
    AuthState(String),
    /// A setting cannot be used (a flag's value the parser could not check).
    #[error("{flag}: {reason}")]
    InvalidConfig {
        /// The flag.
        flag: &'static str,
        /// What is wrong (never a secret).
        reason: String,
    },
    /// The TLS certificate or key cannot be used.
    #[error("TLS {path}: {reason}")]
    Tls {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::NoServer { .. }
            | Error::ShuttingDown
            | Error::QueueFull
            | Error::TooManySessions
            | Error::RegistrationsFull
            | Error::ClusterUnavailable(_)
            | Error::AuthState(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::RateLimited(_) | Error::ClientRateLimited => StatusCode::TOO_MANY_REQUESTS,
            Error::RequestTimeout => StatusCode::GATEWAY_TIMEOUT,
            Error::ServerGone | Error::InvalidServerResponse(_) | Error::InstanceLost => {
                StatusCode::BAD_GATEWAY
            }
            Error::UnknownClientSession | Error::UnknownSession | Error::UnknownRequest => {
                StatusCode::NOT_FOUND
            }
            Error::MessageTooLarge { .. } | Error::BodyTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Error::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            Error::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Unauthorized | Error::ServerUnauthorized => StatusCode::UNAUTHORIZED,
            Error::TokenConfig { .. } | Error::Tls { .. } | Error::InvalidConfig { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Error::Forbidden | Error::OriginRefused => StatusCode::FORBIDDEN,
            Error::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            Error::OAuth(c) => c.status,
            Error::BadVersionHeader(_) | Error::MissingClientSession | Error::CannotResume => {
                StatusCode::BAD_REQUEST
            }
            Error::InvalidMessage(_)
            | Error::ResponseNotAccepted
            | Error::InvalidPoolName
            | Error::UnsupportedProtocolVersion
            | Error::InvalidBody(_)
            | Error::InvalidQuery(_)
            | Error::InvalidName => StatusCode::BAD_REQUEST,
        }
    }

    /// The `Retry-After` seconds sent with this error: every 429 and the "busy" 503s carry
    /// one. The rate limiter overrides it with the wait its bucket computed.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            // A poll slot frees up within a poll timeout, a registration within an expiry,
            // a queue slot with the next answer: a second is an honest "soon", and a polite
            // client backs off further on its own.
            Error::RateLimited(_)
            | Error::ClientRateLimited
            | Error::QueueFull
            | Error::RegistrationsFull
            | Error::TooManySessions => Some(1),
            _ => None,
        }
    }

    /// The JSON-RPC error object for client routes; `None` for reverse-client errors.
    pub fn to_error_object(&self) -> Option<ErrorObject> {
        Some(match self {
            Error::NoServer { pool: None } => {
                ErrorObject::new(ErrorCode::NO_SERVER, "no MCP server registered")
            }
            Error::NoServer { pool: Some(pool) } => ErrorObject::new(
                ErrorCode::NO_SERVER,
                format!("no MCP server named '{pool}'"),
            )
            .with_data(json!({ "pool": pool })),
            Error::RequestTimeout => {
                ErrorObject::new(ErrorCode::REQUEST_TIMEOUT, "request timeout")
            }
            Error::ServerGone => ErrorObject::new(ErrorCode::SERVER_GONE, "server gone"),
            Error::ShuttingDown => ErrorObject::new(ErrorCode::SERVER_GONE, "proxy shutting down"),
            Error::InstanceLost => ErrorObject::new(
                ErrorCode::SERVER_GONE,
                "the proxy instance serving this request was lost; retry",
            ),
            Error::ClusterUnavailable(_) => ErrorObject::new(
                ErrorCode::SERVER_ERROR,
                "proxy cluster store unavailable; retry later",
            ),
            Error::UnknownClientSession => ErrorObject::unknown_session(),
            Error::InvalidMessage(e) => e.to_error_object(),
            Error::ResponseNotAccepted => ErrorObject::invalid_request(
                "a JSON-RPC response is not accepted on /message; send a request or notification",
            ),
            Error::InvalidPoolName => {
                ErrorObject::invalid_request("server name must match [A-Za-z0-9._-]{1,64}")
            }
            Error::MessageTooLarge { limit } => {
                ErrorObject::invalid_request(format!("message larger than {limit} bytes"))
            }
            Error::InvalidServerResponse(_) => {
                ErrorObject::new(ErrorCode::INTERNAL_ERROR, "invalid response from server")
            }
            Error::UnsupportedProtocolVersion => ErrorObject::new(
                ErrorCode::UNSUPPORTED_PROTOCOL_VERSION,
                "unsupported protocol version",
            ),
            Error::BadVersionHeader(v) => ErrorObject::new(
                ErrorCode::UNSUPPORTED_PROTOCOL_VERSION,
                format!("unsupported MCP-Protocol-Version {v:?}"),
            )
            .with_data(json!({ "supported": mcp_protocol::version::SUPPORTED, "requested": v })),
            Error::MissingClientSession => ErrorObject::invalid_request(
                "Mcp-Session-Id header is required (send initialize first)",
            ),
            Error::UnsupportedMediaType => ErrorObject::invalid_request(
                "Content-Type must be application/json",
            ),
            Error::NotAcceptable => ErrorObject::invalid_request(
                "Accept must allow application/json or text/event-stream (GET: text/event-stream)",
            ),
            Error::Forbidden => ErrorObject::new(
                ErrorCode::SERVER_ERROR,
                "Host or Origin not allowed (see --allowed-hosts and --cors-origins)",
            ),
            Error::CannotResume => {
                ErrorObject::invalid_request("cannot resume the stream named by Last-Event-ID")
            }
            Error::Unauthorized => ErrorObject::new(
                ErrorCode::SERVER_ERROR,
                "unauthorized: a valid client token for this server is required (Authorization: Bearer)",
            ),
            Error::OAuth(c) => ErrorObject::new(ErrorCode::SERVER_ERROR, c.message.clone()),
            Error::ClientRateLimited => ErrorObject::new(
                ErrorCode::SERVER_ERROR,
                "too many requests: retry after the number of seconds in Retry-After",
            ),
            Error::QueueFull => ErrorObject::new(
                ErrorCode::SERVER_ERROR,
                "server busy: too many pending requests, retry later",
            ),
            Error::TooManySessions => ErrorObject::new(
                ErrorCode::SERVER_ERROR,
                "too many client sessions: retry later",
            ),
            Error::RegistrationsFull | Error::AuthState(_) => return None,
            Error::UnknownSession
            | Error::RateLimited(_)
            | Error::UnknownRequest
            | Error::InvalidBody(_)
            | Error::InvalidQuery(_)
            | Error::InvalidName
            | Error::OriginRefused
            | Error::Misdirected
            | Error::BodyTooLarge { .. }
            | Error::ServerUnauthorized
            | Error::TokenConfig { .. }
            | Error::InvalidConfig { .. }
            | Error::Tls { .. } => return None,
        })
    }

    /// The wire error body for reverse-client routes.
    pub(crate) fn to_wire_error(&self) -> WireError {
        let (code, message) = match self {
            Error::UnknownSession => (
                WireErrorCode::UnknownSession,
                "unknown session: register again".to_owned(),
            ),
            Error::UnknownRequest => (
                WireErrorCode::UnknownRequest,
                "no pending request has this request_id: drop it, do not retry".to_owned(),
            ),
            Error::InvalidBody(detail) => (WireErrorCode::InvalidBody, detail.clone()),
            Error::InvalidQuery(detail) => (WireErrorCode::InvalidQuery, detail.clone()),
            Error::InvalidName => (
                WireErrorCode::InvalidName,
                "pool name must match [A-Za-z0-9._-]{1,64}".to_owned(),
            ),
            Error::BodyTooLarge { limit } => (
                WireErrorCode::PayloadTooLarge,
                format!("body larger than {limit} bytes"),
            ),
            Error::ServerUnauthorized => (
                WireErrorCode::Unauthorized,
                "a valid server token for this server name and registration is required (Authorization: Bearer)"
                    .to_owned(),
            ),
            Error::RateLimited(what) => (WireErrorCode::RateLimited, (*what).to_owned()),
            Error::OriginRefused => (
                WireErrorCode::Forbidden,
                "a channel cannot be opened from a web page (Origin not allowed)".to_owned(),
            ),
            Error::Misdirected => (
                WireErrorCode::Misdirected,
                "this proxy instance is not the registration's home: keep polling, retry the channel"
                    .to_owned(),
            ),
            other => (WireErrorCode::Other, other.to_string()),
        };
        WireError::new(code, message)
    }

    /// This error as a JSON-RPC answer to the client's request `id`.
    pub fn with_id(self, id: Option<RequestId>) -> RpcError {
        RpcError { id, error: self }
    }
}

/// An [`Error`] on a client route, answered with the client's own id.
#[derive(Debug)]
pub struct RpcError {
    /// The client's id, when it could be read.
    pub id: Option<RequestId>,
    /// What went wrong.
    pub error: Error,
}

impl IntoResponse for RpcError {
    fn into_response(self) -> Response {
        let status = self.error.status();
        match &self.error {
            Error::InvalidServerResponse(detail) => {
                tracing::warn!(%detail, "server's final answer is not a JSON-RPC response")
            }
            e if status.is_server_error() => tracing::info!(error = %e, "message failed"),
            e => tracing::debug!(error = %e, "message refused"),
        }
        let mut response = match self.error.to_error_object() {
            Some(obj) => {
                crate::audit::note_error_code(obj.code.0.into());
                (status, Json(RpcResponse::error(self.id, obj))).into_response()
            }
            None => (status, Json(self.error.to_wire_error())).into_response(),
        };
        challenge(&self.error, &mut response);
        response
    }
}

/// Headers the status implies: `Retry-After` on 429s and busy 503s ([`Error::retry_after`]);
/// RFC 6750, a 401 names the scheme it wants; and a refused token ends the connection.
fn challenge(error: &Error, response: &mut Response) {
    // What comes after a token refusal (discovery, an OAuth flow) starts afresh; the listener
    // closes every connection whose request was answered before its body was read anyway.
    if matches!(error, Error::Unauthorized | Error::ServerUnauthorized) {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    if let Some(secs) = error.retry_after() {
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(secs),
        );
    }
    if let Error::OAuth(c) = error {
        if let Some(value) = &c.www_authenticate {
            response
                .headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, value.clone());
        }
    } else if response.status() == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer realm=\"mcp-proxy\""),
        );
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        if self.to_error_object().is_some() {
            return self.with_id(None).into_response();
        }
        let status = self.status();
        tracing::debug!(error = %self, status = status.as_u16(), "wire request refused");
        let mut response = (status, Json(self.to_wire_error())).into_response();
        challenge(&self, &mut response);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_carry_codes_and_statuses() {
        let cases = [
            (Error::NoServer { pool: None }, 503, -32010),
            (Error::RequestTimeout, 504, -32011),
            (Error::ServerGone, 502, -32012),
            (Error::UnknownClientSession, 404, -32001),
            (Error::MessageTooLarge { limit: 1 }, 413, -32600),
            (Error::InvalidServerResponse("x".into()), 502, -32603),
        ];
        for (e, status, code) in cases {
            assert_eq!(e.status().as_u16(), status, "{e}");
            assert_eq!(e.to_error_object().unwrap().code.0, code, "{e}");
        }
        let named = Error::NoServer {
            pool: Some("files".into()),
        }
        .to_error_object()
        .unwrap();
        assert_eq!(named.message, "no MCP server named 'files'");
        assert_eq!(named.data, Some(json!({"pool": "files"})));
    }

    #[test]
    fn every_429_carries_retry_after() {
        for e in [
            Error::RateLimited("x"),
            Error::ClientRateLimited,
            Error::QueueFull,
            Error::TooManySessions,
        ] {
            let status = e.status();
            let resp = e.into_response();
            assert_eq!(resp.status(), status);
            assert_eq!(resp.headers()["retry-after"], "1");
        }
        let resp = Error::UnknownRequest.into_response();
        assert!(!resp.headers().contains_key("retry-after"));
    }

    #[test]
    fn a_bad_version_header_names_the_supported_and_the_requested_version() {
        let e = Error::BadVersionHeader("1999-01-01".into());
        assert_eq!(e.status().as_u16(), 400);
        let obj = e.to_error_object().unwrap();
        assert_eq!(obj.code.0, -32022);
        assert_eq!(
            obj.data,
            Some(json!({
                "supported": mcp_protocol::version::SUPPORTED,
                "requested": "1999-01-01",
            }))
        );
    }

    #[test]
    fn wire_errors_have_wire_bodies() {
        let body = serde_json::to_value(Error::UnknownRequest.to_wire_error()).unwrap();
        assert_eq!(body["error"], "unknown_request");
        let body = serde_json::to_value(Error::BodyTooLarge { limit: 5 }.to_wire_error()).unwrap();
        assert_eq!(body["error"], "payload_too_large");
        assert!(Error::UnknownSession.to_error_object().is_none());
    }
}
