//! Streamable HTTP (MCP 2025-11-25 and 2026-07-28), served directly by this crate (feature `http`): for
//! servers with no NAT in the way, and the benchmark's direct baseline. The HTTP-free rules
//! (headers, `Accept`, versions, Host/Origin, SSE framing, event logs) come from
//! [`mcp_protocol::streamable`], which the proxy's `/mcp` shares.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use mcp_server::{http, Server, ServerConfig};
//! let server = Server::new(ServerConfig::new("demo", "1.0.0"));
//! let running = http::start(server, "127.0.0.1:8080", http::HttpConfig::default()).await?;
//! println!("listening on {}", running.url());
//! running.shutdown().await
//! # }
//! ```
//!
//! # Behaviour (one endpoint, [`HttpConfig::path`], default `/mcp`)
//! - **Every request**: a `Host` or `Origin` outside [`HttpConfig::allowed_hosts`] (loopback
//!   names are always allowed) gets 403, against DNS rebinding.
//! - **POST** carries one JSON-RPC message (`Content-Type: application/json`, else 415; a batch
//!   gets 400 -32600; unreadable JSON 400 -32700; an `Accept` allowing neither JSON nor SSE, 406).
//!   - `initialize` starts a session: a random UUID v4 `Mcp-Session-Id` comes back on the answer.
//!   - Any other message needs that header (400 without it; 404 for a session that is unknown,
//!     ended or expired, so the client initializes again) and a supported
//!     `MCP-Protocol-Version` header (400 otherwise; absent reads as 2025-03-26).
//!   - The era is decided per request: one whose `MCP-Protocol-Version` header or `_meta`
//!     names 2026-07-28 is served without a session (no handshake). Its `MCP-Protocol-Version`,
//!     `Mcp-Method` and `Mcp-Name` headers must mirror the body (400 -32020 otherwise); its
//!     errors carry the spec's statuses (404 for an unknown method, 400 for bad params); when
//!     the client takes both, it is answered with JSON unless the handler sends something
//!     first; closing its response (JSON or SSE) cancels the handler. A version header this
//!     crate does not speak gets 400 -32022 with `data.supported`, in either era. A
//!     `server/discover` without a session is answered in any era.
//!   - Notifications and responses (a client's answers to `sampling/createMessage`,
//!     `elicitation/create`, `roots/list`) get 202 with no body.
//!   - A request is answered with JSON or an SSE stream as `Accept` and
//!     [`HttpConfig::response`] decide. On a stream, what the handler sends first (progress,
//!     log messages, requests to the client) comes as events with ids, then the answer; the
//!     stream outlives its connection: a client that drops it resumes with GET and
//!     `Last-Event-ID` (disconnection is not cancellation; `notifications/cancelled` is). A
//!     request answered with JSON has its handler's messages sent on the session's GET stream.
//! - **GET** (`Accept: text/event-stream`, else 406) opens the session's stream for messages not
//!   tied to a request: list changes, resource updates, [`crate::Server::log`] (the server's
//!   session sink writes there). A new GET replaces the previous connection; with
//!   `Last-Event-ID` it first replays what the client missed, on the stream the id names.
//! - **DELETE** ends the session ([`crate::Server::close_session`]): 204.
//! - GET and DELETE with `MCP-Protocol-Version: 2026-07-28` get 405 (`Allow: POST`): that era
//!   has no session and no GET stream.
//! - SSE streams carry a keep-alive comment every [`HttpConfig::keep_alive`], and end when
//!   their session ends or the server shuts down.
//!
//! The session idle timeout and session limit are the server's
//! ([`crate::ServerConfig::session_idle_timeout`], [`crate::ServerConfig::max_sessions`]).

mod routes;
mod streams;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use mcp_protocol::Message;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio_util::sync::CancellationToken;

pub use mcp_protocol::streamable::HostAllowList;

use crate::Server;
use streams::SessionStreams;

/// The endpoint's path by default.
pub const DEFAULT_PATH: &str = "/mcp";
/// How often an idle SSE stream gets a keep-alive comment, by default.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The largest POST body accepted, by default (real tool arguments can be large).
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// How long [`serve`] waits for in-flight requests after shutdown begins, by default.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How a request POST is answered when the client accepts both JSON and SSE.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResponsePreference {
    /// JSON, unless the handler sends something (progress, a log entry, a request to the
    /// client) before its result: then an SSE stream from that message on. Plain calls get the
    /// cheapest answer, chatty ones the complete one.
    #[default]
    Adaptive,
    /// Always JSON; the handler's messages go to the session's GET stream.
    Json,
    /// Always an SSE stream.
    Sse,
}

/// How the endpoint is served. Build with [`HttpConfig::default`] and the `with_*` methods.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HttpConfig {
    /// The endpoint's path (default [`DEFAULT_PATH`]).
    pub path: String,
    /// Host names (and origins) allowed besides loopback ones.
    pub allowed_hosts: HostAllowList,
    /// How often an idle SSE stream gets a keep-alive comment.
    pub keep_alive: Duration,
    /// JSON or SSE, when the client accepts both.
    pub response: ResponsePreference,
    /// The largest POST body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// How long [`serve`] waits for in-flight requests once shutdown begins.
    pub drain_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            path: DEFAULT_PATH.to_owned(),
            allowed_hosts: HostAllowList::default(),
            keep_alive: DEFAULT_KEEP_ALIVE,
            response: ResponsePreference::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

impl HttpConfig {
    /// Sets the endpoint's path (a leading `/` is added if missing).
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        let path = path.into();
        self.path = if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        };
        self
    }

    /// Allows these host names (or `name:port`; `*` for any) besides loopback ones.
    pub fn with_allowed_hosts<I, S>(mut self, hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.allowed_hosts = HostAllowList::new(hosts);
        self
    }

    /// Sets the keep-alive interval of SSE streams.
    pub fn with_keep_alive(mut self, every: Duration) -> Self {
        self.keep_alive = every.max(Duration::from_millis(1));
        self
    }

    /// Sets JSON or SSE for clients that accept both.
    pub fn with_response(mut self, preference: ResponsePreference) -> Self {
        self.response = preference;
        self
    }

    /// Sets the largest POST body accepted.
    pub fn with_max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Sets how long shutdown waits for in-flight requests.
    pub fn with_drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }
}

/// The endpoint's router, to serve alone or merge into an application's.
///
/// Installs the server's session sink ([`Server::set_session_sink`]) so list changes, resource
/// updates and server log messages reach the sessions' GET streams. Its SSE streams end only
/// when their sessions do: to shut down, use [`serve`] or cancel through [`router_with_shutdown`].
pub fn router(server: Server, config: HttpConfig) -> axum::Router {
    router_with_shutdown(server, config, CancellationToken::new())
}

/// Like [`router`], with open SSE streams ending when `shutdown` is cancelled (so a graceful
/// shutdown is not held up by clients that keep a stream open).
pub fn router_with_shutdown(
    server: Server,
    config: HttpConfig,
    shutdown: CancellationToken,
) -> axum::Router {
    let transport = Arc::new(Transport {
        server: server.clone(),
        config,
        shutdown,
        sessions: Mutex::new(HashMap::new()),
    });
    // Weak: the server holds the sink, and the transport holds the server.
    let weak: Weak<Transport> = Arc::downgrade(&transport);
    server.set_session_sink(move |session, message| {
        weak.upgrade()
            .is_some_and(|t| t.send_on_get(session, &message))
    });
    routes::router(transport)
}

/// Serves the endpoint on a bound listener until `shutdown` is cancelled, then stops accepting,
/// ends SSE streams and waits up to [`HttpConfig::drain_timeout`] for in-flight requests.
/// Accepted sockets get `TCP_NODELAY` (Nagle's algorithm would delay small answers). Also
/// expires idle sessions while it runs ([`Server::spawn_expiry_task`]).
pub async fn serve(
    listener: TcpListener,
    server: Server,
    config: HttpConfig,
    shutdown: CancellationToken,
) -> io::Result<()> {
    use axum::serve::ListenerExt;

    let drain = config.drain_timeout;
    let expiry = server.spawn_expiry_task(shutdown.child_token());
    let app = router_with_shutdown(server.clone(), config, shutdown.child_token());
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
    });
    let stop = shutdown.clone();
    let serving = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
    let result = tokio::select! {
        result = serving => result,
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(drain).await;
        } => {
            tracing::warn!("in-flight requests still running after the drain timeout; stopping");
            Ok(())
        }
    };
    server.clear_session_sink();
    expiry.abort();
    result
}

/// Binds `addr` and serves the endpoint in a spawned task (the seed's `server.start()`).
pub async fn start(
    server: Server,
    addr: impl ToSocketAddrs,
    config: HttpConfig,
) -> io::Result<HttpHandle> {
    let listener = TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    let path = config.path.clone();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(listener, server, config, shutdown.clone()));
    Ok(HttpHandle {
        local_addr,
        path,
        shutdown,
        task,
    })
}

/// A running endpoint started by [`start`] (or [`Server::start`]).
#[derive(Debug)]
pub struct HttpHandle {
    local_addr: SocketAddr,
    path: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<io::Result<()>>,
}

impl HttpHandle {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The endpoint's URL, `http://ADDR/PATH`.
    pub fn url(&self) -> String {
        format!("http://{}{}", self.local_addr, self.path)
    }

    /// The token that stops it when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Shuts down gracefully and waits until it has stopped.
    pub async fn shutdown(self) -> io::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until it stops (after its shutdown token is cancelled).
    pub async fn wait(self) -> io::Result<()> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(io::Error::other(e)),
        }
    }
}

impl Server {
    /// Serves this server over Streamable HTTP on `addr` with the default [`HttpConfig`]
    /// (endpoint `/mcp`), in a spawned task (feature `http`).
    pub async fn start(&self, addr: impl ToSocketAddrs) -> io::Result<HttpHandle> {
        start(self.clone(), addr, HttpConfig::default()).await
    }
}

/// The endpoint's state: the server, the configuration and the HTTP side of each session.
#[derive(Debug)]
struct Transport {
    server: Server,
    config: HttpConfig,
    /// Ends open SSE streams.
    shutdown: CancellationToken,
    /// The SSE streams of each session this endpoint started. `std::sync::Mutex`: lookups and
    /// inserts only, never held across an `.await`.
    sessions: Mutex<HashMap<String, Arc<SessionStreams>>>,
}

impl Transport {
    fn sessions(&self) -> MutexGuard<'_, HashMap<String, Arc<SessionStreams>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The HTTP side of a live session; `None` (and forgotten) once the server ended it.
    fn session(&self, id: &str) -> Option<Arc<SessionStreams>> {
        let found = self.sessions().get(id).cloned()?;
        if self.server.has_session(id) {
            return Some(found);
        }
        self.end_session(id);
        None
    }

    /// Records a new session, forgetting those the server no longer has (expired).
    fn add_session(&self, id: String) -> Arc<SessionStreams> {
        let streams = Arc::new(SessionStreams::default());
        let mut sessions = self.sessions();
        sessions.retain(|id, s| {
            let live = self.server.has_session(id);
            if !live {
                s.close();
            }
            live
        });
        sessions.insert(id, Arc::clone(&streams));
        streams
    }

    /// Forgets a session's streams and ends their connections.
    fn end_session(&self, id: &str) {
        let removed = self.sessions().remove(id);
        if let Some(s) = removed {
            s.close();
        }
    }

    /// Sends a message on a session's GET stream (the server's session sink).
    fn send_on_get(&self, session: &str, message: &Message) -> bool {
        self.session(session)
            .is_some_and(|s| s.send_on_get(message))
    }
}
