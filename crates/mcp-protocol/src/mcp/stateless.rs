//! The stateless era (2026-07-28): no handshake; each request carries its protocol version,
//! client capabilities and client info in `params._meta`, and results say what they are.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::lifecycle::{ClientCapabilities, Implementation, ServerCapabilities};
use super::notifications::LoggingLevel;
use super::JsonObject;

/// `_meta` key of the request's protocol version (required in 2026-07-28).
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// `_meta` key of the client's capabilities (required in 2026-07-28).
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// `_meta` key of the client's implementation info (optional).
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
/// `_meta` key of the log level wanted for this request (optional; replaces `logging/setLevel`).
pub const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
/// `_meta` key of the server's implementation info on results.
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

/// The `_meta` object of a 2026-07-28 request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestMeta {
    /// The protocol version of this request.
    #[serde(rename = "io.modelcontextprotocol/protocolVersion")]
    pub protocol_version: String,
    /// What the client can do, for this request.
    #[serde(rename = "io.modelcontextprotocol/clientCapabilities")]
    pub client_capabilities: ClientCapabilities,
    /// Who the client is.
    #[serde(
        rename = "io.modelcontextprotocol/clientInfo",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub client_info: Option<Implementation>,
    /// Log messages wanted for this request, at this level and above.
    #[serde(
        rename = "io.modelcontextprotocol/logLevel",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub log_level: Option<LoggingLevel>,
    /// Token to attach to progress notifications for this request.
    #[serde(
        rename = "progressToken",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub progress_token: Option<Value>,
    /// Other keys (trace context, extensions).
    #[serde(flatten)]
    pub extra: JsonObject,
}

impl RequestMeta {
    /// Reads the protocol version from a request's params, if its `_meta` names one.
    ///
    /// This is how a server or the proxy tells the eras apart, per request.
    pub fn protocol_version_of(params: Option<&Value>) -> Option<&str> {
        params?.get("_meta")?.get(META_PROTOCOL_VERSION)?.as_str()
    }
}

/// What kind of result this is (`"complete"` when absent, for older servers).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ResultType(pub String);

impl ResultType {
    /// The final answer.
    pub const COMPLETE: &'static str = "complete";
    /// The server needs the client to answer `inputRequests` and retry.
    pub const INPUT_REQUIRED: &'static str = "input_required";

    /// `"complete"`.
    pub fn complete() -> Self {
        ResultType(Self::COMPLETE.into())
    }

    /// `"input_required"`.
    pub fn input_required() -> Self {
        ResultType(Self::INPUT_REQUIRED.into())
    }
}

/// Who may cache a result, like HTTP `Cache-Control: public` / `private`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheScope {
    /// Holds no user-specific data; shared caches may keep it.
    Public,
    /// Cache only within the same authorization context.
    Private,
}

/// Result of `server/discover`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiscoverResult {
    /// Every protocol version the server speaks.
    pub supported_versions: Vec<String>,
    /// What the server offers.
    pub capabilities: ServerCapabilities,
    /// How to use the server, for the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// `"complete"`.
    pub result_type: ResultType,
    /// How long the client may cache this answer, in milliseconds.
    pub ttl_ms: u64,
    /// Who may cache it.
    pub cache_scope: CacheScope,
    /// Result metadata; carries `io.modelcontextprotocol/serverInfo`.
    #[serde(rename = "_meta", default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<JsonObject>,
    /// Fields this version does not know.
    #[serde(flatten)]
    pub extra: JsonObject,
}

/// A result asking the client for more input before the request can complete (multi round trip).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputRequiredResult {
    /// `"input_required"`.
    pub result_type: ResultType,
    /// Requests the client must answer (sampling, roots, elicitation), by server-chosen key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_requests: Option<JsonObject>,
    /// Opaque state the client sends back with its answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_state: Option<String>,
    /// Result metadata.
    #[serde(rename = "_meta", default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<JsonObject>,
    /// Fields this version does not know.
    #[serde(flatten)]
    pub extra: JsonObject,
}
