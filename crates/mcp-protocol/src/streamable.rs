//! The rules of MCP's Streamable HTTP transport (2025-11-25) that do not depend on an HTTP
//! library: header names, `Accept` negotiation, the protocol-version header, Origin and Host
//! checks, SSE event framing and the per-stream event log that makes streams resumable.
//!
//! The proxy (`/mcp`) and `mcp-server`'s direct HTTP endpoint both serve this transport; this
//! module is the part they share, so the two cannot drift apart.

use serde_json::Value;

use crate::jsonrpc::{ErrorCode, ErrorObject};
use crate::version;

mod events;

pub use events::{EventId, EventLog};

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

/// Host names that are always allowed: the loopback names (DNS rebinding cannot point them
/// elsewhere).
fn is_loopback_host(host: &str) -> bool {
    if host == "localhost" {
        return true;
    }
    // An address, parsed: `127.attacker.example` starts like one and is a name anyone can
    // point anywhere (the rebinding case this check exists for).
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<std::net::IpAddr>().is_ok_and(|ip| match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    })
}

/// Splits `host[:port]` (or `[v6]:port`) and returns the host, lowercased.
fn host_part(authority: &str) -> String {
    let authority = authority.trim().to_ascii_lowercase();
    if let Some(rest) = authority.strip_prefix('[') {
        return match rest.find(']') {
            Some(end) => format!("[{}]", &rest[..end]),
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host.to_owned(),
        _ => authority,
    }
}

/// The Host and Origin allow-list that defends against DNS rebinding. Loopback names are always
/// allowed; `*` allows every host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostAllowList {
    hosts: Vec<String>,
    any: bool,
}

impl HostAllowList {
    /// Allows loopback names plus `hosts` (names or `name:port`; `*` for any).
    pub fn new<I, S>(hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list = HostAllowList::default();
        for h in hosts {
            let h = h.as_ref().trim();
            if h == "*" {
                list.any = true;
            } else if !h.is_empty() {
                list.hosts.push(host_part(h));
            }
        }
        list
    }

    /// Whether `host` (from a `Host` header or an Origin's authority) may reach us.
    pub fn allows_host(&self, authority: &str) -> bool {
        let host = host_part(authority);
        self.any || is_loopback_host(&host) || self.hosts.contains(&host)
    }

    /// Whether a request's `Origin` header is acceptable: absent (not a browser) or naming an
    /// allowed host. `null` and unparsable origins are refused.
    pub fn allows_origin(&self, origin: Option<&str>) -> bool {
        let Some(origin) = origin else { return true };
        let Some((_, rest)) = origin.trim().split_once("://") else {
            return false;
        };
        let authority = rest.split('/').next().unwrap_or("");
        !authority.is_empty() && self.allows_host(authority)
    }
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

/// The `params` key each name-bearing 2026-07-28 method mirrors in `Mcp-Name`.
pub fn name_param(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

/// The HTTP status of a JSON-RPC error answering a 2026-07-28 request, by its code: 400 for
/// malformed requests, bad parameters, header mismatches and unsupported versions, 404 for an
/// unknown method, `None` (200) otherwise.
pub fn stateless_error_status(code: ErrorCode) -> Option<u16> {
    match code {
        ErrorCode::PARSE_ERROR
        | ErrorCode::INVALID_REQUEST
        | ErrorCode::INVALID_PARAMS
        | ErrorCode::HEADER_MISMATCH
        | ErrorCode::UNSUPPORTED_PROTOCOL_VERSION => Some(400),
        ErrorCode::METHOD_NOT_FOUND => Some(404),
        // -32021: a client capability the request needs is missing.
        ErrorCode(-32021) => Some(400),
        _ => None,
    }
}

/// The routing headers of one POST, as the client sent them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoutingHeaders<'a> {
    /// `MCP-Protocol-Version`.
    pub protocol_version: Option<&'a str>,
    /// `Mcp-Method`.
    pub method: Option<&'a str>,
    /// `Mcp-Name` (possibly `=?base64?..?=`-wrapped).
    pub name: Option<&'a str>,
}

/// Which era a POSTed request belongs to, decided per request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Era {
    /// 2025-11-25 and older: a session from `initialize`, `Mcp-Session-Id`.
    Handshake,
    /// 2026-07-28: no session; headers mirror the body and are checked.
    Stateless,
}

/// Why a POST is refused before it reaches a server (HTTP 400).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestRefusal {
    /// The version (header or `_meta`) is not one this project speaks.
    #[error("unsupported protocol version {0:?}")]
    UnsupportedVersion(String),
    /// A 2026-07-28 routing header is missing or disagrees with the body.
    #[error("{0}")]
    HeaderMismatch(String),
}

impl RequestRefusal {
    /// The JSON-RPC error to answer with: -32022 with `data: {"supported", "requested"}`, or
    /// -32020.
    pub fn to_error_object(&self) -> ErrorObject {
        match self {
            RequestRefusal::UnsupportedVersion(requested) => unsupported_version_error(requested),
            RequestRefusal::HeaderMismatch(message) => {
                ErrorObject::new(ErrorCode::HEADER_MISMATCH, message.clone())
            }
        }
    }
}

/// -32022 for `requested`, naming every supported version in `data.supported` (so a
/// dual-era client can re-probe at a mutual version or fall back to `initialize`).
pub fn unsupported_version_error(requested: &str) -> ErrorObject {
    ErrorObject::new(
        ErrorCode::UNSUPPORTED_PROTOCOL_VERSION,
        format!("Unsupported protocol version: {requested}"),
    )
    .with_data(serde_json::json!({"supported": version::SUPPORTED, "requested": requested}))
}

/// Decides a request's era and checks its headers against its body.
///
/// A request is of the stateless era when its `MCP-Protocol-Version` header or its
/// `params._meta` protocol version is 2026-07-28 or later. A version header naming a version
/// this project does not speak is refused in either era. In the stateless era the header must
/// equal the `_meta` version, `Mcp-Method` must equal the method, and for `tools/call`,
/// `prompts/get` and `resources/read` `Mcp-Name` must equal the named parameter (a missing
/// header is a mismatch, as the spec requires the headers).
pub fn classify_request(
    headers: RoutingHeaders<'_>,
    method: &str,
    params: Option<&Value>,
) -> Result<Era, RequestRefusal> {
    let header = headers.protocol_version.map(str::trim);
    if let Some(v) = header.filter(|v| !version::is_supported(v)) {
        return Err(RequestRefusal::UnsupportedVersion(v.to_owned()));
    }
    let body = params
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get("io.modelcontextprotocol/protocolVersion"))
        .and_then(Value::as_str);
    let stateless =
        header.is_some_and(version::is_stateless) || body.is_some_and(version::is_stateless);
    if !stateless {
        return Ok(Era::Handshake);
    }
    if header != body {
        return Err(RequestRefusal::HeaderMismatch(format!(
            "MCP-Protocol-Version header ({}) does not match params._meta's protocol version ({})",
            header.unwrap_or("absent"),
            body.unwrap_or("absent")
        )));
    }
    if let Some(v) = body.filter(|v| !version::is_supported(v)) {
        return Err(RequestRefusal::UnsupportedVersion(v.to_owned()));
    }
    if headers.method != Some(method) {
        return Err(RequestRefusal::HeaderMismatch(format!(
            "Mcp-Method header ({}) does not match the body's method ({method})",
            headers.method.unwrap_or("absent")
        )));
    }
    if let Some(key) = name_param(method) {
        let wanted = params.and_then(|p| p.get(key)).and_then(Value::as_str);
        if let Some(wanted) = wanted {
            if headers.name.and_then(decode_header_value).as_deref() != Some(wanted) {
                return Err(RequestRefusal::HeaderMismatch(format!(
                    "Mcp-Name header does not match params.{key}"
                )));
            }
        }
    }
    Ok(Era::Stateless)
}

/// Decodes a header value that may be wrapped as `=?base64?<payload>?=` (how clients send
/// names that are not plain visible ASCII); `None` for a malformed wrapping.
pub fn decode_header_value(value: &str) -> Option<String> {
    let Some(payload) = value
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
    else {
        return Some(value.to_owned());
    };
    String::from_utf8(decode_base64(payload)?).ok()
}

/// Standard base64 with padding, strictly (no whitespace, canonical trailing bits).
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (i, chunk) in bytes.chunks(4).enumerate() {
        let last = i + 1 == bytes.len() / 4;
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | sextet(c)?;
        }
        n <<= 6 * pad as u32;
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        // Non-canonical: bits the padding hides must be zero.
        if (pad == 1 && n & 0xff != 0) || (pad == 2 && n & 0xffff != 0) {
            return None;
        }
        out.extend_from_slice(&decoded[..3 - pad]);
    }
    Some(out)
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
    fn hosts_and_origins() {
        let list = HostAllowList::new(["mcp.example.com"]);
        for ok in [
            "localhost:9000",
            "127.0.0.1",
            "[::1]:8080",
            "MCP.example.com:443",
            "mcp.example.com",
        ] {
            assert!(list.allows_host(ok), "{ok}");
        }
        assert!(!list.allows_host("evil.example.com"));
        assert!(!list.allows_host("mcp.example.com.evil.net"));
        assert!(list.allows_origin(None));
        assert!(list.allows_origin(Some("http://localhost:6274")));
        assert!(list.allows_origin(Some("https://mcp.example.com")));
        assert!(!list.allows_origin(Some("https://evil.example.com")));
        assert!(!list.allows_origin(Some("null")));
        assert!(HostAllowList::new(["*"]).allows_host("anything.example"));
    }

    #[test]
    fn loopback_is_an_address_test_never_a_prefix_test() {
        let list = HostAllowList::new::<_, &str>([]);
        for ok in [
            "127.0.0.1:9000",
            "127.8.9.10",
            "[::1]",
            "[::ffff:127.0.0.1]:1",
            "LOCALHOST",
        ] {
            assert!(list.allows_host(ok), "{ok}");
        }
        for rebinding in [
            "127.attacker.example:9000",
            "127.0.0.1.evil.example",
            "127.0.0.1.nip.io",
            "localhost.evil.example",
            "128.0.0.1",
            "[::2]",
        ] {
            assert!(!list.allows_host(rebinding), "{rebinding}");
            assert!(
                !list.allows_origin(Some(&format!("http://{rebinding}"))),
                "{rebinding}"
            );
        }
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

    #[test]
    fn eras_are_decided_per_request_and_headers_checked() {
        let meta = |v: &str| {
            serde_json::json!({"name": "echo", "_meta": {
            "io.modelcontextprotocol/protocolVersion": v,
            "io.modelcontextprotocol/clientCapabilities": {}}})
        };
        let ok = RoutingHeaders {
            protocol_version: Some("2026-07-28"),
            method: Some("tools/call"),
            name: Some("echo"),
        };
        let p = meta("2026-07-28");
        assert_eq!(
            classify_request(ok, "tools/call", Some(&p)),
            Ok(Era::Stateless)
        );
        let b64 = RoutingHeaders {
            name: Some("=?base64?ZWNobw==?="),
            ..ok
        };
        assert_eq!(
            classify_request(b64, "tools/call", Some(&p)),
            Ok(Era::Stateless)
        );
        // Handshake era: no checks beyond a known version.
        let old = RoutingHeaders {
            protocol_version: Some("2025-11-25"),
            ..Default::default()
        };
        assert_eq!(
            classify_request(old, "tools/call", None),
            Ok(Era::Handshake)
        );
        assert_eq!(
            classify_request(RoutingHeaders::default(), "ping", None),
            Ok(Era::Handshake)
        );
        let mismatch = |h: RoutingHeaders<'_>, p: &Value| {
            let e = classify_request(h, "tools/call", Some(p)).unwrap_err();
            assert!(matches!(e, RequestRefusal::HeaderMismatch(_)), "{e:?}");
            assert_eq!(e.to_error_object().code, ErrorCode::HEADER_MISMATCH);
        };
        mismatch(
            RoutingHeaders {
                method: Some("tools/list"),
                ..ok
            },
            &p,
        );
        mismatch(RoutingHeaders { method: None, ..ok }, &p);
        mismatch(
            RoutingHeaders {
                name: Some("other"),
                ..ok
            },
            &p,
        );
        mismatch(RoutingHeaders { name: None, ..ok }, &p);
        mismatch(
            RoutingHeaders {
                protocol_version: None,
                ..ok
            },
            &p,
        );
        mismatch(ok, &serde_json::json!({"name": "echo"}));
        mismatch(
            RoutingHeaders {
                protocol_version: Some("2025-11-25"),
                ..ok
            },
            &p,
        );
        let e = classify_request(
            RoutingHeaders {
                protocol_version: Some("2099-01-01"),
                ..ok
            },
            "tools/call",
            Some(&meta("2099-01-01")),
        )
        .unwrap_err();
        let obj = e.to_error_object();
        assert_eq!(obj.code, ErrorCode::UNSUPPORTED_PROTOCOL_VERSION);
        let data = obj.data.unwrap();
        assert_eq!(data["requested"], "2099-01-01");
        assert!(data["supported"]
            .as_array()
            .unwrap()
            .contains(&"2026-07-28".into()));
        assert!(data["supported"]
            .as_array()
            .unwrap()
            .contains(&"2025-11-25".into()));
    }

    #[test]
    fn header_values_and_statuses() {
        assert_eq!(decode_header_value("plain").as_deref(), Some("plain"));
        assert_eq!(decode_header_value("=?base64?w6k=?=").as_deref(), Some("é"));
        assert_eq!(decode_header_value("=?base64?YQ==?=").as_deref(), Some("a"));
        assert_eq!(
            decode_header_value("=?base64?YWI=?=").as_deref(),
            Some("ab")
        );
        assert_eq!(
            decode_header_value("=?base64?YWJj?=").as_deref(),
            Some("abc")
        );
        assert_eq!(
            decode_header_value("=?base64?YR==?="),
            None,
            "non-canonical"
        );
        assert_eq!(decode_header_value("=?base64?Y?="), None);
        assert_eq!(decode_header_value("=?base64?!!!!?="), None);
        assert_eq!(
            stateless_error_status(ErrorCode::METHOD_NOT_FOUND),
            Some(404)
        );
        assert_eq!(
            stateless_error_status(ErrorCode::HEADER_MISMATCH),
            Some(400)
        );
        assert_eq!(stateless_error_status(ErrorCode::INVALID_PARAMS), Some(400));
        assert_eq!(stateless_error_status(ErrorCode::INTERNAL_ERROR), None);
        assert_eq!(name_param("resources/read"), Some("uri"));
        assert_eq!(name_param("tools/list"), None);
    }
}
