//! [`ServerConfig`]: who the server is and the limits it keeps.

use std::time::Duration;

/// How many items a `*/list` page holds by default.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// How long a client session may stay silent before it is dropped, by default.
pub const DEFAULT_SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How many client sessions the server holds at most, by default (bounds memory).
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;
/// How long a client may cache the answer to `server/discover`, by default.
pub const DEFAULT_DISCOVER_TTL: Duration = Duration::from_secs(5 * 60);

/// Who the server is and the limits it keeps. Build with [`ServerConfig::new`] and the `with_*`
/// methods, or set the public fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Programmatic name, sent as `serverInfo.name`.
    pub name: String,
    /// Version string, sent as `serverInfo.version`.
    pub version: String,
    /// Display name, sent as `serverInfo.title`.
    pub title: Option<String>,
    /// How to use the server, for the model (`instructions` of `initialize` and `server/discover`).
    pub instructions: Option<String>,
    /// How many items one page of `tools/list`, `resources/list`... holds (at least 1).
    pub page_size: usize,
    /// A client session with no message for this long (and nothing running) is dropped.
    pub session_idle_timeout: Duration,
    /// The most client sessions held at once; `initialize` beyond it fails.
    pub max_sessions: usize,
    /// How long a client may cache `server/discover`'s answer (`ttlMs`).
    pub discover_ttl: Duration,
}

impl ServerConfig {
    /// A configuration with this name and version and every default.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        ServerConfig {
            name: name.into(),
            version: version.into(),
            title: None,
            instructions: None,
            page_size: DEFAULT_PAGE_SIZE,
            session_idle_timeout: DEFAULT_SESSION_IDLE_TIMEOUT,
            max_sessions: DEFAULT_MAX_SESSIONS,
            discover_ttl: DEFAULT_DISCOVER_TTL,
        }
    }

    /// Sets the display name.
    pub fn with_title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// Sets the instructions for the model.
    pub fn with_instructions(mut self, instructions: impl Into<String>) -> Self {
        self.instructions = Some(instructions.into());
        self
    }

    /// Sets the page size of list results (0 is read as 1).
    pub fn with_page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size.max(1);
        self
    }

    /// Sets how long an idle client session is kept.
    pub fn with_session_idle_timeout(mut self, timeout: Duration) -> Self {
        self.session_idle_timeout = timeout;
        self
    }

    /// Sets the most client sessions held at once.
    pub fn with_max_sessions(mut self, max: usize) -> Self {
        self.max_sessions = max;
        self
    }

    /// Sets how long `server/discover`'s answer may be cached.
    pub fn with_discover_ttl(mut self, ttl: Duration) -> Self {
        self.discover_ttl = ttl;
        self
    }
}
