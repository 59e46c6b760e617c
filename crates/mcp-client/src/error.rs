//! What can go wrong talking to an MCP server.

use mcp_protocol::ErrorObject;

/// A failed MCP call, by where it failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL cannot be used.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP request failed: connection refused, reset, timed out.
    #[error("transport error: {0}")]
    Transport(#[from] reqwest::Error),
    /// The server answered with an HTTP error status (the proxy's 503, 504, 400...).
    #[error("HTTP {status}: {body}")]
    Status {
        /// The HTTP status code.
        status: u16,
        /// The JSON-RPC error's message when the body carried one, else the start of the body.
        body: String,
        /// The JSON-RPC error the body carried, if any.
        rpc: Option<ErrorObject>,
    },
    /// The server answered with a JSON-RPC error.
    #[error("JSON-RPC error {}: {}", .0.code, .0.message)]
    Rpc(ErrorObject),
    /// The server answered 404 to a request carrying a session id: it no longer knows the
    /// session (it expired, or the server behind a proxy went away). Call
    /// [`Client::initialize`](crate::Client::initialize) again to start a new one.
    #[error("the server no longer knows this session; initialize again")]
    SessionExpired,
    /// The answer is not what the protocol says it should be.
    #[error("invalid response: {0}")]
    InvalidResponse(String),
}

impl Error {
    /// The JSON-RPC error, if the server sent one.
    pub fn rpc(&self) -> Option<&ErrorObject> {
        match self {
            Error::Rpc(e) => Some(e),
            Error::Status { rpc, .. } => rpc.as_ref(),
            _ => None,
        }
    }
}
