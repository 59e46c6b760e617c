//! The reverse-proxy wire protocol: what the proxy and a reverse client (ours or the seed's)
//! exchange on `/register`, `/poll` and `/response`. docs/protocol.md is the contract; these
//! types are its code.
//!
//! Messages inside the envelopes stay raw JSON ([`RawValue`]) because the proxy only routes
//! them: it never needs to rebuild a tool result to pass it on.

use std::collections::BTreeMap;

use serde::{de, Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::mcp::JsonObject;

/// Default path of registration (`POST`) and deregistration (`DELETE`).
pub const REGISTER_PATH: &str = "/register";
/// Default path of the long poll.
pub const POLL_PATH: &str = "/poll";
/// Default path where servers post answers.
pub const RESPONSE_PATH: &str = "/response";
/// The seed's client endpoint for the default pool.
pub const MESSAGE_PATH: &str = "/message";
/// The `type` every registration sends.
pub const SERVER_TYPE: &str = "mcp_server";
/// Prefix of the session ids of modern registrations; legacy ids are 32 lowercase hex digits.
pub const MODERN_SESSION_PREFIX: &str = "m-";

/// Which kind of registration a session id names, read from its format alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionIdKind {
    /// 32 lowercase hex digits, as the seed's proxy mints: re-adoptable after a restart.
    Legacy,
    /// `m-` and 32 lowercase hex digits: unknown ones get 404 so the client registers again.
    Modern,
}

impl SessionIdKind {
    /// Classifies a session id; `None` when it is malformed.
    pub fn of(session_id: &str) -> Option<SessionIdKind> {
        fn hex32(s: &str) -> bool {
            s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        }
        match session_id.strip_prefix(MODERN_SESSION_PREFIX) {
            Some(rest) if hex32(rest) => Some(SessionIdKind::Modern),
            Some(_) => None,
            None if hex32(session_id) => Some(SessionIdKind::Legacy),
            None => None,
        }
    }
}

/// Whether `name` is a valid pool name: `[A-Za-z0-9._-]{1,64}`.
pub fn is_valid_pool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `POST /register` body. Without `capabilities` it is a legacy (seed) registration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// Always `"mcp_server"`.
    #[serde(rename = "type", default = "server_type")]
    pub kind: String,
    /// The server's clock in units of its choosing (the seed sends a tick count); informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<serde_json::Number>,
    /// The pool to join; absent means the default pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the server's side can do; its presence marks a modern registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<RegistrationCapabilities>,
    /// Fields this version does not know.
    #[serde(flatten)]
    pub extra: JsonObject,
}

fn server_type() -> String {
    SERVER_TYPE.to_owned()
}

impl RegisterRequest {
    /// The seed's body: `{"type":"mcp_server","timestamp":N}`.
    pub fn legacy(timestamp: i64) -> Self {
        RegisterRequest {
            kind: server_type(),
            timestamp: Some(timestamp.into()),
            name: None,
            capabilities: None,
            extra: JsonObject::new(),
        }
    }

    /// A modern registration in pool `name` (or the default pool).
    pub fn modern(name: Option<String>, capabilities: RegistrationCapabilities) -> Self {
        RegisterRequest {
            kind: server_type(),
            timestamp: None,
            name,
            capabilities: Some(capabilities),
            extra: JsonObject::new(),
        }
    }

    /// Whether this is a modern registration.
    pub fn is_modern(&self) -> bool {
        self.capabilities.is_some()
    }
}

/// What a modern reverse client declares at registration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RegistrationCapabilities {
    /// The server keeps per-client sessions (items carry `client_session`).
    #[serde(default)]
    pub client_sessions: bool,
    /// The server sends interim and session messages and takes `reply` items.
    #[serde(default)]
    pub server_messages: bool,
    /// How many polls the client keeps open at all times (0: liveness by expiry only).
    #[serde(default)]
    pub held_polls: u32,
    /// The most items the client takes in one poll answer (0 or 1: one, the seed's shape;
    /// more: every answer is a [`PollBatch`]). The proxy grants at most [`MAX_POLL_ITEMS`].
    #[serde(default, skip_serializing_if = "is_one_or_less")]
    pub poll_items: u32,
    /// MCP protocol versions the server speaks (at most [`MAX_PROTOCOL_VERSIONS`], each at
    /// most [`MAX_PROTOCOL_VERSION_LEN`] bytes: the proxy keeps them for the registration's
    /// life).
    #[serde(default, deserialize_with = "bounded_versions")]
    pub protocol_versions: Vec<String>,
}

/// Most protocol versions a registration may declare (there are a handful of MCP eras).
pub const MAX_PROTOCOL_VERSIONS: usize = 16;
/// Longest protocol version a registration may declare (`2025-11-25` is 10 bytes).
pub const MAX_PROTOCOL_VERSION_LEN: usize = 32;

/// Reads `protocol_versions`, refusing a list over the bounds as soon as it is seen, before
/// the rest of a huge list is allocated.
fn bounded_versions<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct Bounded;
    impl<'de> de::Visitor<'de> for Bounded {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "at most {MAX_PROTOCOL_VERSIONS} protocol versions of at most \
                 {MAX_PROTOCOL_VERSION_LEN} bytes"
            )
        }

        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(v) = seq.next_element::<String>()? {
                if out.len() == MAX_PROTOCOL_VERSIONS {
                    return Err(de::Error::custom(format_args!(
                        "capabilities.protocol_versions: more than {MAX_PROTOCOL_VERSIONS} entries"
                    )));
                }
                if v.len() > MAX_PROTOCOL_VERSION_LEN {
                    return Err(de::Error::custom(format_args!(
                        "capabilities.protocol_versions: an entry longer than \
                         {MAX_PROTOCOL_VERSION_LEN} bytes"
                    )));
                }
                out.push(v);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Bounded)
}

/// `POST /register` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// The registration's id, the server's only handle (keep it secret).
    pub session_id: String,
    /// Where to poll.
    pub poll_endpoint: String,
    /// Where to post answers.
    pub response_endpoint: String,
    /// The items per poll answer granted, when more than one (absent: one item per answer,
    /// also from a proxy that does not know the field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_items: Option<u32>,
}

/// The most items a proxy hands over in one poll answer.
pub const MAX_POLL_ITEMS: u32 = 64;

/// The items a registration may be granted per poll answer for `requested` (0 and 1: one).
pub fn granted_poll_items(requested: u32) -> u32 {
    requested.clamp(1, MAX_POLL_ITEMS)
}

fn is_one_or_less(n: &u32) -> bool {
    *n <= 1
}

/// A poll answer carrying several items, for a registration granted `poll_items` above 1.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PollBatch {
    /// The items, in queue order (at least one).
    pub items: Vec<PollItem>,
}

/// One item handed to a poll (HTTP 200 body; 204 means none).
#[derive(Clone, Debug)]
pub enum PollItem {
    /// A client's request or notification.
    Request(RequestItem),
    /// A client's answer to a request the server sent it (modern only).
    Reply(ReplyItem),
    /// A client session ended: drop its state (modern only).
    SessionClosed(SessionClosedItem),
}

/// A client's request (or notification, when `request` has no id) for the server.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RequestItem {
    /// The proxy's own id for this hand-over; the answer names it.
    pub request_id: String,
    /// The JSON-RPC message, as the client sent it.
    pub request: Box<RawValue>,
    /// The client session it belongs to; absent for sessionless traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_session: Option<String>,
    /// Forwarded request headers the server must see.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// Who is calling, when the proxy authorized the client with an OAuth access token (the
    /// token itself never reaches the server). Modern registrations only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
}

/// Who a client is, as the proxy's OAuth authorization server vouched for it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The authorization server that issued the token (`iss`).
    pub issuer: String,
    /// The user (or, for a client-credentials token, the client) the token was issued to
    /// (`sub`); absent when the token names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The OAuth client the user authorized (`client_id`, else `azp` or `appid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The scopes the token grants (`scope`, else `scp`), in the token's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

/// A client's answer to a server-to-client request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReplyItem {
    /// The proxy's id of the request the server's message was tied to.
    pub request_id: String,
    /// The client session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_session: Option<String>,
    /// The JSON-RPC response from the client.
    pub message: Box<RawValue>,
}

/// A client session ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClosedItem {
    /// The session that ended.
    pub client_session: String,
}

impl Serialize for PollItem {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(tag = "kind", rename_all = "snake_case")]
        enum Tagged<'a> {
            Reply(&'a ReplyItem),
            SessionClosed(&'a SessionClosedItem),
        }
        match self {
            PollItem::Request(r) => r.serialize(serializer),
            PollItem::Reply(r) => Tagged::Reply(r).serialize(serializer),
            PollItem::SessionClosed(s) => Tagged::SessionClosed(s).serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for PollItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // RawValue cannot pass through serde's buffered (untagged) enums, so read every
        // field once and decide by `kind`.
        #[derive(Deserialize)]
        struct Any {
            #[serde(default)]
            kind: Option<String>,
            #[serde(default)]
            request_id: Option<String>,
            #[serde(default)]
            request: Option<Box<RawValue>>,
            #[serde(default)]
            message: Option<Box<RawValue>>,
            #[serde(default)]
            client_session: Option<String>,
            #[serde(default)]
            headers: Option<BTreeMap<String, String>>,
            #[serde(default)]
            identity: Option<Identity>,
        }
        let any = Any::deserialize(deserializer)?;
        let need = |field: &'static str| de::Error::missing_field(field);
        match any.kind.as_deref() {
            None => Ok(PollItem::Request(RequestItem {
                request_id: any.request_id.ok_or_else(|| need("request_id"))?,
                request: any.request.ok_or_else(|| need("request"))?,
                client_session: any.client_session,
                headers: any.headers,
                identity: any.identity,
            })),
            Some("reply") => Ok(PollItem::Reply(ReplyItem {
                request_id: any.request_id.ok_or_else(|| need("request_id"))?,
                client_session: any.client_session,
                message: any.message.ok_or_else(|| need("message"))?,
            })),
            Some("session_closed") => Ok(PollItem::SessionClosed(SessionClosedItem {
                client_session: any.client_session.ok_or_else(|| need("client_session"))?,
            })),
            Some(other) => Err(de::Error::unknown_variant(
                other,
                &["reply", "session_closed"],
            )),
        }
    }
}

/// `POST /response` body: a final answer, an interim message, or a session message.
#[derive(Clone, Debug)]
pub enum ResponseEnvelope {
    /// The final answer to a request; `response` is the raw `null` after a notification.
    Final {
        /// The proxy's id from the poll item.
        request_id: String,
        /// The JSON-RPC response (or `null`).
        response: Box<RawValue>,
    },
    /// A message tied to a pending request (progress, log, a request to the client).
    Interim {
        /// The proxy's id from the poll item.
        request_id: String,
        /// The JSON-RPC notification or request.
        message: Box<RawValue>,
    },
    /// A message for a client session's stream, tied to no request.
    Session {
        /// The client session.
        client_session: String,
        /// The JSON-RPC notification or request.
        message: Box<RawValue>,
    },
}

impl ResponseEnvelope {
    /// A final answer.
    pub fn final_response(request_id: impl Into<String>, response: Box<RawValue>) -> Self {
        ResponseEnvelope::Final {
            request_id: request_id.into(),
            response,
        }
    }

    /// Whether this is a final answer of `null` (after a notification).
    pub fn is_null_response(&self) -> bool {
        matches!(self, ResponseEnvelope::Final { response, .. } if response.get() == "null")
    }
}

impl Serialize for ResponseEnvelope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(2))?;
        match self {
            ResponseEnvelope::Final {
                request_id,
                response,
            } => {
                map.serialize_entry("request_id", request_id)?;
                map.serialize_entry("response", response)?;
            }
            ResponseEnvelope::Interim {
                request_id,
                message,
            } => {
                map.serialize_entry("request_id", request_id)?;
                map.serialize_entry("message", message)?;
            }
            ResponseEnvelope::Session {
                client_session,
                message,
            } => {
                map.serialize_entry("client_session", client_session)?;
                map.serialize_entry("message", message)?;
            }
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for ResponseEnvelope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // `response` may be `null`, which must stay distinct from an absent field, so it is
        // read as a raw value (`null` stays the text "null") behind a presence flag.
        fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
            Box::<RawValue>::deserialize(d).map(Some)
        }
        #[derive(Deserialize)]
        struct Any {
            #[serde(default)]
            request_id: Option<String>,
            #[serde(default, deserialize_with = "present")]
            response: Option<Box<RawValue>>,
            #[serde(default)]
            message: Option<Box<RawValue>>,
            #[serde(default)]
            client_session: Option<String>,
        }
        let any = Any::deserialize(deserializer)?;
        match (any.request_id, any.response, any.message, any.client_session) {
            (Some(request_id), Some(response), None, _) => Ok(ResponseEnvelope::Final {
                request_id,
                response,
            }),
            (Some(request_id), None, Some(message), _) => Ok(ResponseEnvelope::Interim {
                request_id,
                message,
            }),
            (None, None, Some(message), Some(client_session)) => Ok(ResponseEnvelope::Session {
                client_session,
                message,
            }),
            (Some(_), Some(_), Some(_), _) => Err(de::Error::custom(
                "a response envelope has \"response\" or \"message\", not both",
            )),
            (Some(_), None, None, _) => Err(de::Error::custom(
                "a response envelope with \"request_id\" needs \"response\" or \"message\"",
            )),
            _ => Err(de::Error::custom(
                "expected {\"request_id\",\"response\"}, {\"request_id\",\"message\"} or {\"client_session\",\"message\"}",
            )),
        }
    }
}

/// `POST /response` success body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseStatusKind {
    /// Accepted and delivered.
    Ok,
    /// A retried final answer that had already landed; nothing done.
    Duplicate,
    /// Nobody waits for this any more (legacy: unknown or late answer; any: an ended client
    /// session); logged and dropped.
    Ignored,
}

/// `{"status": ...}`, the body of a 200 on `/response`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseStatus {
    /// What happened to the answer.
    pub status: ResponseStatusKind,
}

/// The machine-readable code of a wire error body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireErrorCode {
    /// The registration's session id is not known (register again).
    UnknownSession,
    /// The `request_id` names no pending request of this registration.
    UnknownRequest,
    /// The body is not what the route takes.
    InvalidBody,
    /// The pool name breaks `[A-Za-z0-9._-]{1,64}`.
    InvalidName,
    /// The query is missing `session_id` or has a malformed one.
    InvalidQuery,
    /// Missing or wrong token.
    Unauthorized,
    /// Refused whoever the caller is (a browser's `Origin` on the channel).
    Forbidden,
    /// This cluster instance is not the registration's home (the channel).
    Misdirected,
    /// The body is larger than the proxy accepts.
    PayloadTooLarge,
    /// Too many requests; see Retry-After.
    RateLimited,
    /// A code this version does not know.
    #[serde(other)]
    Other,
}

/// `{"error": code, "message": text}`: the body of every wire error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// What went wrong, for programs.
    pub error: WireErrorCode,
    /// What went wrong, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl WireError {
    /// An error with a message.
    pub fn new(error: WireErrorCode, message: impl Into<String>) -> Self {
        WireError {
            error,
            message: Some(message.into()),
        }
    }
}

/// `POST /response` body carrying several bodies at once (a registration granted `poll_items`
/// above 1): each entry is read on its own, so a malformed one fails alone.
#[derive(Debug, Serialize, Deserialize)]
pub struct AnswerBatch {
    /// The bodies, each a [`ResponseEnvelope`] in JSON.
    pub answers: Vec<Box<RawValue>>,
}

/// What became of one entry of an [`AnswerBatch`]: a status, or the wire error it would have
/// got alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AnswerOutcome {
    /// Taken (`ok`, `duplicate` or `ignored`).
    Status(ResponseStatus),
    /// Refused, as a single post would have been.
    Error(WireError),
}

impl From<WireError> for AnswerOutcome {
    fn from(error: WireError) -> Self {
        AnswerOutcome::Error(error)
    }
}

/// The 200 body of an [`AnswerBatch`]: one outcome per entry, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerOutcomes {
    /// The outcomes.
    pub results: Vec<AnswerOutcome>,
}

/// Builds a raw JSON value from any serializable message.
pub fn to_raw<T: Serialize>(value: &T) -> Box<RawValue> {
    // Serializing our own message types to JSON cannot fail: they hold no maps with
    // non-string keys and no failing Serialize impls.
    serde_json::value::to_raw_value(value).expect("message types always serialize")
}

/// Reads a raw JSON value as a [`Value`] (for callers that need to inspect it).
pub fn from_raw(raw: &RawValue) -> Value {
    serde_json::from_str(raw.get()).unwrap_or(Value::Null)
}
