//! Why a reverse client stopped.

/// A reason the reverse client cannot go on (transient trouble is retried, never returned).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The proxy URL cannot be used.
    #[error("invalid proxy URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A setting is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
    /// The MCP server program could not be started.
    #[error("cannot start {program:?}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// The proxy refused the registration for a reason retrying cannot fix (bad name, bad token).
    #[error("the proxy refused the registration (HTTP {status}): {message}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The proxy's explanation.
        message: String,
    },
}

impl From<reqwest::Error> for Error {
    /// Without the URL the error may name: it can carry a session id.
    fn from(error: reqwest::Error) -> Self {
        Error::Http(crate::redact::http_error(error))
    }
}
