//! The rules of MCP's Streamable HTTP transport (2025-11-25) that do not depend on an HTTP
//! library: header names, `Accept` negotiation, the protocol-version header, Origin and Host
//! checks, SSE event framing and the per-stream event log that makes streams resumable.
//!
//! The proxy (`/mcp`) and `mcp-server`'s direct HTTP endpoint both serve this transport; this
//! module is the part they share, so the two cannot drift apart.

use std::collections::VecDeque;

use crate::version;

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
    matches!(host, "localhost" | "127.0.0.1" | "[::1]" | "::1") || host.starts_with("127.")
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

/// An SSE event id: which stream, and the position in it (`<stream>.<seq>`), so a client's
/// `Last-Event-ID` says where to resume and on which stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventId {
    /// The stream's id (opaque, chosen by the server).
    pub stream: String,
    /// The position in the stream, from 1.
    pub seq: u64,
}

impl EventId {
    /// Reads `<stream>.<seq>`.
    pub fn parse(text: &str) -> Option<EventId> {
        let (stream, seq) = text.trim().rsplit_once('.')?;
        if stream.is_empty() {
            return None;
        }
        Some(EventId {
            stream: stream.to_owned(),
            seq: seq.parse().ok()?,
        })
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.stream, self.seq)
    }
}

/// The last events of one stream, kept so a client that reconnects with `Last-Event-ID` gets
/// what it missed. Bounded: the oldest events are forgotten first.
#[derive(Clone, Debug)]
pub struct EventLog {
    stream: String,
    next: u64,
    events: VecDeque<(u64, String)>,
    capacity: usize,
}

impl EventLog {
    /// An empty log for stream `stream`, keeping at most `capacity` events.
    pub fn new(stream: impl Into<String>, capacity: usize) -> Self {
        EventLog {
            stream: stream.into(),
            next: 1,
            events: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// The stream's id.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Records `data` and returns its event id.
    pub fn push(&mut self, data: String) -> EventId {
        let seq = self.next;
        self.next += 1;
        if self.events.len() == self.capacity {
            self.events.pop_front();
        }
        self.events.push_back((seq, data));
        EventId {
            stream: self.stream.clone(),
            seq,
        }
    }

    /// The events after `after`, as `(id, data)`; `None` when some were already forgotten (or
    /// `after` is from the future), so the client cannot be made whole.
    pub fn replay_after(&self, after: u64) -> Option<Vec<(EventId, &str)>> {
        if after >= self.next {
            return None;
        }
        let first_kept = self.events.front().map_or(self.next, |(s, _)| *s);
        if after + 1 < first_kept {
            return None;
        }
        Some(
            self.events
                .iter()
                .filter(|(s, _)| *s > after)
                .map(|(s, d)| {
                    (
                        EventId {
                            stream: self.stream.clone(),
                            seq: *s,
                        },
                        d.as_str(),
                    )
                })
                .collect(),
        )
    }
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
    fn event_ids_and_replay() {
        assert_eq!(
            EventId::parse("c-1.7"),
            Some(EventId {
                stream: "c-1".into(),
                seq: 7
            })
        );
        assert_eq!(EventId::parse("nope"), None);
        assert_eq!(EventId::parse(".3"), None);
        let mut log = EventLog::new("g", 3);
        for i in 1..=5 {
            assert_eq!(log.push(format!("m{i}")).to_string(), format!("g.{i}"));
        }
        let replay = log.replay_after(3).unwrap();
        assert_eq!(
            replay.iter().map(|(_, d)| *d).collect::<Vec<_>>(),
            ["m4", "m5"]
        );
        assert_eq!(log.replay_after(5).unwrap().len(), 0);
        assert!(log.replay_after(1).is_none(), "m2 was forgotten");
        assert!(log.replay_after(9).is_none(), "from the future");
    }
}
