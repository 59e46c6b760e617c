//! The rules of MCP's Streamable HTTP transport (2025-11-25) that do not depend on an HTTP
//! library: header names, `Accept` negotiation, the protocol-version header, Origin and Host
//! checks, SSE event framing and the per-stream event log that makes streams resumable.
//!
//! The proxy (`/mcp`) and `mcp-server`'s direct HTTP endpoint both serve this transport; this
//! module is the part they share, so the two cannot drift apart.
//!
//! This file owns the header names, `Accept` negotiation, the version header, session ids and
//! the writing of SSE events; the rest is in submodules, re-exported here:
//! - `origin`: [`HostAllowList`], the Host and Origin checks against DNS rebinding.
//! - `stateless`: the 2026-07-28 era decided per request ([`classify_request`]), its routing
//!   headers checked against the body, and its errors' HTTP statuses.
//! - `events`: [`EventId`] and [`EventLog`], the per-stream log that makes streams resumable.
//!
//! Reading SSE is [`crate::sse`].

use crate::version;

mod events;
mod origin;
mod stateless;

pub use events::{EventId, EventLog};
pub use origin::HostAllowList;
pub use stateless::{
    classify_request, decode_header_value, name_param, stateless_error_status,
    unsupported_version_error, Era, RequestRefusal, RoutingHeaders,
};

/// Request and response header carrying the client session id.
pub const SESSION_ID_HEADER: &str = "mcp-session-id";
/// Request header carrying the negotiated protocol version (required after `initialize`).
pub const PROTOCOL_VERSION_HEADER: &str = "mcp-protocol-version";
/// Request header with which a client resumes an SSE stream.
pub const LAST_EVENT_ID_HEADER: &str = "last-event-id";
/// 2026-07-28 request header repeating the body's method.
pub const METHOD_HEADER: &str = "mcp-method";
/// 2026-07-28 request header repeating the body's tool, prompt or resource name.
pub const NAME_HEADER: &str = "mcp-name";
/// The JSON content type.
pub const JSON: &str = "application/json";
/// The SSE content type.
pub const EVENT_STREAM: &str = "text/event-stream";
/// The version a server assumes when a client sends no version header (the spec's rule).
pub const DEFAULT_HEADER_VERSION: &str = version::V2025_03_26;
/// An SSE comment line that keeps idle connections (and the proxies between) open.
pub const KEEP_ALIVE: &str = ": keep-alive\n\n";

/// How a POST wants its answer, read from its `Accept` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseMode {
    /// One JSON body.
    Json,
    /// An SSE stream (which lets the server send progress and requests first).
    Sse,
}

/// What a POST's `Accept` header allows: `None` when it allows neither JSON nor SSE (406).
///
/// The spec asks clients to list both; when both are listed, `prefer` decides. A missing
/// header or `*/*` accepts anything.
pub fn negotiate_post(accept: Option<&str>, prefer: ResponseMode) -> Option<ResponseMode> {
    let Some(accept) = accept else {
        return Some(prefer);
    };
    let (mut json, mut sse) = (false, false);
    for part in accept.split(',') {
        let media = part
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let q_zero = part.split(';').skip(1).any(|p| {
            matches!(
                p.trim().replace(' ', "").as_str(),
                "q=0" | "q=0.0" | "q=0.00" | "q=0.000"
            )
        });
        if q_zero {
            continue;
        }
        match media.as_str() {
            JSON | "application/*" => json = true,
            EVENT_STREAM | "text/*" => sse = true,
            "*/*" => {
                json = true;
                sse = true;
            }
            _ => {}
        }
    }
    match (json, sse) {
        (true, true) => Some(prefer),
        (true, false) => Some(ResponseMode::Json),
        (false, true) => Some(ResponseMode::Sse),
        (false, false) => None,
    }
}

/// Whether a GET's `Accept` header allows an SSE stream.
pub fn accepts_event_stream(accept: Option<&str>) -> bool {
    negotiate_post(accept, ResponseMode::Sse) == Some(ResponseMode::Sse)
}

/// Why a request's `MCP-Protocol-Version` header is refused (HTTP 400).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unsupported MCP-Protocol-Version {0:?}; supported: {supported}", supported = version::SUPPORTED.join(", "))]
pub struct UnsupportedVersion(pub String);

/// The protocol version a request speaks, from its header: the header's value when this
/// project supports it, [`DEFAULT_HEADER_VERSION`] when absent.
pub fn header_version(header: Option<&str>) -> Result<&str, UnsupportedVersion> {
    match header {
        None => Ok(DEFAULT_HEADER_VERSION),
        Some(v) if version::is_supported(v.trim()) => Ok(v.trim()),
        Some(v) => Err(UnsupportedVersion(v.to_owned())),
    }
}

/// Whether a session id is acceptable on the wire: 1 to 128 visible ASCII characters (the
/// spec allows 0x21 to 0x7E).
pub fn is_valid_session_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| (0x21..=0x7e).contains(&b))
}
/// One SSE event carrying a JSON-RPC message: `id: ..`, `event: message`, `data: ..`.
///
/// `data` must be compact JSON (no raw newlines), which is what serde_json writes.
pub fn sse_event(id: Option<&str>, data: &str) -> String {
    let mut out = String::with_capacity(data.len() + 48);
    if let Some(id) = id {
        out.push_str("id: ");
        out.push_str(id);
        out.push('\n');
    }
    out.push_str("event: message\n");
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}

/// The priming event a server may send first on an SSE stream: an event id with empty data,
/// so the client can resume the stream (`Last-Event-ID`) even if it drops before the first
/// message. Clients before 2025-11-25 try to parse the empty data and fail: send it only when
/// [`sends_priming_event`] says so.
pub fn sse_priming_event(id: &str) -> String {
    format!("id: {id}\ndata: \n\n")
}

/// Whether a client speaking `version` understands priming events (2025-11-25 and later).
pub fn sends_priming_event(version: &str) -> bool {
    version >= version::V2025_11_25
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation() {
        use ResponseMode::*;
        let both = "application/json, text/event-stream";
        assert_eq!(negotiate_post(Some(both), Json), Some(Json));
        assert_eq!(negotiate_post(Some(both), Sse), Some(Sse));
        assert_eq!(negotiate_post(Some("application/json"), Sse), Some(Json));
        assert_eq!(negotiate_post(Some("text/event-stream"), Json), Some(Sse));
        assert_eq!(negotiate_post(Some("*/*"), Json), Some(Json));
        assert_eq!(negotiate_post(None, Sse), Some(Sse));
        assert_eq!(negotiate_post(Some("text/html"), Json), None);
        assert_eq!(
            negotiate_post(Some("application/json;q=0, text/event-stream"), Json),
            Some(Sse)
        );
        assert!(accepts_event_stream(Some("text/event-stream")));
        assert!(!accepts_event_stream(Some("application/json")));
    }

    #[test]
    fn version_header() {
        assert_eq!(header_version(None), Ok(version::V2025_03_26));
        assert_eq!(header_version(Some("2025-11-25")), Ok("2025-11-25"));
        let e = header_version(Some("1999-01-01")).unwrap_err();
        assert!(e.to_string().contains("2025-11-25"), "{e}");
    }

    #[test]
    fn session_ids() {
        assert!(is_valid_session_id("c-0a7e3b9d51f24c6e8b2d4f6a8c0e1b3d"));
        assert!(!is_valid_session_id(""));
        assert!(!is_valid_session_id("has space"));
        assert!(!is_valid_session_id(&"x".repeat(129)));
        assert!(!is_valid_session_id("é"));
    }

    #[test]
    fn sse_framing() {
        assert_eq!(
            sse_event(Some("s.1"), r#"{"jsonrpc":"2.0"}"#),
            "id: s.1\nevent: message\ndata: {\"jsonrpc\":\"2.0\"}\n\n"
        );
        assert_eq!(
            sse_event(None, "a\nb"),
            "event: message\ndata: a\ndata: b\n\n"
        );
    }

    #[test]
    fn priming() {
        assert_eq!(sse_priming_event("p1.0"), "id: p1.0\ndata: \n\n");
        assert!(sends_priming_event("2025-11-25"));
        assert!(sends_priming_event("2026-07-28"));
        assert!(!sends_priming_event("2025-06-18"));
        assert!(!sends_priming_event("2024-11-05"));
    }
}
