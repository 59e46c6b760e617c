//! [`ErrorCode`] and [`ErrorObject`]: the `error` member of a failed response, with the
//! standard JSON-RPC codes, MCP's and the proxy's own.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A JSON-RPC error code (`#[serde(transparent)]` over `i32`), with the standard and MCP codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ErrorCode(pub i32);

impl ErrorCode {
    /// Invalid JSON was received.
    pub const PARSE_ERROR: ErrorCode = ErrorCode(-32700);
    /// The JSON sent is not a valid request object.
    pub const INVALID_REQUEST: ErrorCode = ErrorCode(-32600);
    /// The method does not exist or is not available.
    pub const METHOD_NOT_FOUND: ErrorCode = ErrorCode(-32601);
    /// Invalid method parameters.
    pub const INVALID_PARAMS: ErrorCode = ErrorCode(-32602);
    /// Internal JSON-RPC error.
    pub const INTERNAL_ERROR: ErrorCode = ErrorCode(-32603);
    /// MCP: the client session is not known to the server (the proxy maps it to HTTP 404).
    pub const UNKNOWN_SESSION: ErrorCode = ErrorCode(-32001);
    /// Generic implementation-defined server error: a transport refusal such as a Host or
    /// Origin not allowed (HTTP 403) or a missing token (HTTP 401).
    pub const SERVER_ERROR: ErrorCode = ErrorCode(-32000);
    /// MCP: the requested resource does not exist.
    pub const RESOURCE_NOT_FOUND: ErrorCode = ErrorCode(-32002);
    /// Proxy: no MCP server is registered for the addressed pool (HTTP 503).
    pub const NO_SERVER: ErrorCode = ErrorCode(-32010);
    /// Proxy: the server did not answer within the request timeout (HTTP 504).
    pub const REQUEST_TIMEOUT: ErrorCode = ErrorCode(-32011);
    /// Proxy: the server left or died while the request was pending (HTTP 502).
    pub const SERVER_GONE: ErrorCode = ErrorCode(-32012);
    /// MCP 2026-07-28: HTTP headers disagree with the body (HTTP 400).
    pub const HEADER_MISMATCH: ErrorCode = ErrorCode(-32020);
    /// MCP 2026-07-28: the requested protocol version is not supported (HTTP 400).
    pub const UNSUPPORTED_PROTOCOL_VERSION: ErrorCode = ErrorCode(-32022);
    /// MCP: the server needs the user to complete a URL elicitation first.
    pub const URL_ELICITATION_REQUIRED: ErrorCode = ErrorCode(-32042);
    /// The request was cancelled (`notifications/cancelled`, or its session ended) before it
    /// finished. MCP itself sends no answer to a cancelled request, but a relay (the proxy,
    /// the reverse client) needs a final answer to close its pending entry; the code is LSP's
    /// `RequestCancelled`, and the client that cancelled ignores the answer.
    pub const REQUEST_CANCELLED: ErrorCode = ErrorCode(-32800);
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The `error` member of a failed response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    /// What kind of error occurred.
    pub code: ErrorCode,
    /// A short, single-sentence description.
    pub message: String,
    /// Optional detail defined by the sender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl ErrorObject {
    /// An error with the given code and message and no data.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorObject {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// The same error carrying `data`.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// -32700: the bytes are not JSON.
    pub fn parse_error(detail: impl fmt::Display) -> Self {
        Self::new(ErrorCode::PARSE_ERROR, format!("Parse error: {detail}"))
    }

    /// -32600: JSON, but not a valid JSON-RPC message.
    pub fn invalid_request(detail: impl fmt::Display) -> Self {
        Self::new(
            ErrorCode::INVALID_REQUEST,
            format!("Invalid request: {detail}"),
        )
    }

    /// -32601: nobody serves this method.
    pub fn method_not_found(method: &str) -> Self {
        Self::new(
            ErrorCode::METHOD_NOT_FOUND,
            format!("Method not found: {method}"),
        )
    }

    /// -32602: the parameters are wrong.
    pub fn invalid_params(detail: impl fmt::Display) -> Self {
        Self::new(
            ErrorCode::INVALID_PARAMS,
            format!("Invalid params: {detail}"),
        )
    }

    /// -32603: the receiver failed for a reason of its own.
    pub fn internal_error(detail: impl fmt::Display) -> Self {
        Self::new(
            ErrorCode::INTERNAL_ERROR,
            format!("Internal error: {detail}"),
        )
    }

    /// -32800: the request was cancelled before it finished.
    pub fn request_cancelled() -> Self {
        Self::new(ErrorCode::REQUEST_CANCELLED, "request cancelled")
    }

    /// -32001: the client session is not (or no longer) known.
    pub fn unknown_session() -> Self {
        Self::new(ErrorCode::UNKNOWN_SESSION, "unknown session")
    }
}

impl fmt::Display for ErrorObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for ErrorObject {}
