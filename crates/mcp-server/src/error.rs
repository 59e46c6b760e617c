//! The crate's error type, and [`ToolError`], the failure a tool reports to the model.

use std::fmt;

use mcp_protocol::ErrorObject;

/// What can go wrong when a handler talks back to the client, or when the server refuses work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The transport of this request carries no server-to-client messages ([`crate::Outbound::none`]).
    #[error("the client cannot be reached: this transport carries no server-to-client messages")]
    ClientUnreachable,
    /// The client did not declare the capability the request needs (`sampling`, `elicitation`, `roots`).
    #[error("the client does not support {capability}")]
    ClientLacksCapability {
        /// The missing client capability.
        capability: &'static str,
    },
    /// The client answered the server's request with a JSON-RPC error.
    #[error("the client answered {method} with an error: {error}")]
    ClientError {
        /// The method the server sent.
        method: String,
        /// The client's error.
        error: ErrorObject,
    },
    /// The client's answer did not have the shape the method defines.
    #[error("the client's answer to {method} is malformed: {reason}")]
    InvalidClientResult {
        /// The method the server sent.
        method: String,
        /// What is wrong with the answer.
        reason: String,
    },
    /// The request was cancelled (by the client, or because its session ended) while waiting.
    #[error("the request was cancelled")]
    Cancelled,
    /// The server holds as many client sessions as it is configured to.
    #[error("too many client sessions (limit {limit})")]
    TooManySessions {
        /// The configured limit ([`crate::ServerConfig::max_sessions`]).
        limit: usize,
    },
}

impl From<&Error> for ErrorObject {
    fn from(e: &Error) -> Self {
        ErrorObject::internal_error(e)
    }
}

/// A tool's failure: becomes a `tools/call` result with `isError: true` whose text is the message,
/// so the model can read it and correct itself.
///
/// Build one with [`ToolError::new`], or let `?` convert a `String`, a `&str`, an [`Error`] (a
/// failed request to the client), a `serde_json::Error` or an [`ErrorObject`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolError {
    message: String,
}

impl ToolError {
    /// A tool error with this message, shown to the model.
    pub fn new(message: impl Into<String>) -> Self {
        ToolError {
            message: message.into(),
        }
    }

    /// The message shown to the model.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ToolError {}

impl From<String> for ToolError {
    fn from(message: String) -> Self {
        ToolError { message }
    }
}

impl From<&str> for ToolError {
    fn from(message: &str) -> Self {
        ToolError::new(message)
    }
}

impl From<Error> for ToolError {
    fn from(e: Error) -> Self {
        ToolError::new(e.to_string())
    }
}

impl From<serde_json::Error> for ToolError {
    fn from(e: serde_json::Error) -> Self {
        ToolError::new(e.to_string())
    }
}

impl From<ErrorObject> for ToolError {
    fn from(e: ErrorObject) -> Self {
        ToolError::new(e.message)
    }
}

impl From<ToolError> for ErrorObject {
    /// A [`ToolError`] raised by a resource, prompt or completion handler: an internal error.
    fn from(e: ToolError) -> Self {
        ErrorObject::internal_error(e.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_error_conversions_keep_the_message() {
        assert_eq!(ToolError::from("bad a").message(), "bad a");
        assert_eq!(ToolError::from(String::from("bad b")).to_string(), "bad b");
        let e: ToolError = Error::ClientUnreachable.into();
        assert!(e.message().contains("cannot be reached"), "{e}");
        let o: ErrorObject = ToolError::new("boom").into();
        assert_eq!(o.code, mcp_protocol::ErrorCode::INTERNAL_ERROR);
    }
}
