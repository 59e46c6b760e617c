//! [`Server`]: the registries, the sessions, and [`Server::handle`], which answers any incoming
//! JSON-RPC message for a client session.
//!
//! This file owns the server's state, what it says about itself (info, capabilities,
//! `server/discover`) and the lifetime of its client sessions. The rest of [`Server`]'s methods
//! are in submodules, by what they do:
//! - `register`: registering and removing tools, resources, templates, prompts and the
//!   completion handler (each change announced to the sessions).
//! - `notify`: messages outside any request, through the transport's session sink: list
//!   changes, resource updates, server-wide log messages.
//! - `handle`: [`Server::handle`]: sessions and eras, `initialize`, notifications, and the
//!   in-flight table that `notifications/cancelled` looks requests up in.
//! - `dispatch`: a request's method served from the registries, handler panics contained.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use mcp_protocol::mcp::lifecycle::{
    Implementation, ListChangedCapability, ResourcesCapability, ServerCapabilities,
};
use mcp_protocol::mcp::stateless::{CacheScope, DiscoverResult, ResultType, META_SERVER_INFO};
use mcp_protocol::mcp::JsonObject;
use mcp_protocol::version::SUPPORTED;
use mcp_protocol::{ErrorObject, Message, RequestId};
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::pending::PendingClientRequests;
use crate::registry::completion::CompletionHandler;
use crate::registry::prompts::PromptRegistry;
use crate::registry::resources::{ResourceRegistry, TemplateRegistry};
use crate::registry::tools::ToolRegistry;
use crate::session::{Session, SessionStore};
use crate::ServerConfig;

mod dispatch;
mod handle;
mod notify;
mod register;

/// An MCP server: what it offers and the state of its client sessions.
///
/// Cheap to clone (an `Arc` inside); clones share everything. Constructing one spawns nothing;
/// a transport feeds it messages with [`Server::handle`], calling it concurrently for
/// concurrent messages: nothing inside serialises requests, so a slow tool never holds up a
/// `ping` or another call.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

struct Inner {
    config: ServerConfig,
    tools: ToolRegistry,
    resources: ResourceRegistry,
    templates: TemplateRegistry,
    prompts: PromptRegistry,
    /// `std::sync::RwLock`: read to clone the handler out, never held across an `.await`.
    completion: RwLock<Option<CompletionHandler>>,
    sessions: SessionStore,
    /// Requests this server sent to clients, waiting for their answers.
    pending: Arc<PendingClientRequests>,
    /// Running requests by (client session, request id), so `notifications/cancelled` finds them.
    in_flight: Mutex<HashMap<InFlightKey, (u64, CancellationToken)>>,
    /// Tells apart two runs of the same request id, so the first to finish removes only itself.
    in_flight_seq: AtomicU64,
    /// The transport's way to reach a client session outside any request (list changes,
    /// resource updates, server-wide log messages). `std::sync::RwLock`: read to clone the
    /// `Arc` out, never held while it runs.
    session_sink: RwLock<Option<SessionSink>>,
}

/// A transport's delivery of a message to a client session outside any request.
type SessionSink = Arc<dyn Fn(&str, Message) -> bool + Send + Sync>;

type InFlightKey = (Option<String>, RequestId);

/// Which era a request is served in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Era {
    /// 2025-11-25 and older: a session negotiated by `initialize` (or the shared sessionless one).
    Handshake,
    /// 2026-07-28: everything in the request's `_meta`, no session needed.
    Stateless,
}

impl Server {
    /// A server with this configuration and nothing registered yet.
    pub fn new(config: ServerConfig) -> Self {
        let sessions = SessionStore::new(config.session_idle_timeout, config.max_sessions);
        Server {
            inner: Arc::new(Inner {
                config,
                tools: ToolRegistry::default(),
                resources: ResourceRegistry::default(),
                templates: TemplateRegistry::default(),
                prompts: PromptRegistry::default(),
                completion: RwLock::new(None),
                sessions,
                pending: Arc::default(),
                in_flight: Mutex::new(HashMap::new()),
                in_flight_seq: AtomicU64::new(0),
                session_sink: RwLock::new(None),
            }),
        }
    }

    /// The configuration the server was built with.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// Who the server is, as `initialize` and `server/discover` say.
    pub fn server_info(&self) -> Implementation {
        let mut info = Implementation::new(&self.inner.config.name, &self.inner.config.version);
        info.title.clone_from(&self.inner.config.title);
        info
    }

    /// What the server offers now: a feature is announced once something of it is registered.
    pub fn capabilities(&self) -> ServerCapabilities {
        let inner = &self.inner;
        ServerCapabilities {
            tools: (inner.tools.len() > 0).then(list_changed),
            resources: (inner.resources.len() + inner.templates.len() > 0).then(|| {
                ResourcesCapability {
                    subscribe: Some(true),
                    list_changed: Some(true),
                    ..Default::default()
                }
            }),
            prompts: (inner.prompts.len() > 0).then(list_changed),
            logging: Some(JsonObject::new()),
            completions: self.completion_handler().map(|_| JsonObject::new()),
            ..Default::default()
        }
    }

    /// The answer to `server/discover`.
    pub fn discover(&self) -> DiscoverResult {
        let mut meta = JsonObject::new();
        meta.insert(
            META_SERVER_INFO.into(),
            serde_json::to_value(self.server_info()).unwrap_or_default(),
        );
        DiscoverResult {
            supported_versions: SUPPORTED.iter().map(|v| (*v).to_owned()).collect(),
            capabilities: self.capabilities(),
            instructions: self.inner.config.instructions.clone(),
            result_type: ResultType::complete(),
            ttl_ms: u64::try_from(self.inner.config.discover_ttl.as_millis()).unwrap_or(u64::MAX),
            cache_scope: CacheScope::Public,
            meta: Some(meta),
            extra: JsonObject::new(),
        }
    }

    /// How many client sessions the server holds (sessionless traffic is not counted).
    pub fn session_count(&self) -> usize {
        self.inner.sessions.count()
    }

    /// Whether the server knows this client session (it was initialized and has not ended).
    pub fn has_session(&self, session: &str) -> bool {
        self.inner.sessions.get(Some(session)).is_some()
    }

    /// Ends a client session (the proxy's `session_closed`): its state is dropped and its running
    /// requests are cancelled. `false` if the session was unknown.
    pub fn close_session(&self, session: &str) -> bool {
        self.inner.sessions.close(session)
    }

    /// Drops the client sessions idle for longer than
    /// [`ServerConfig::session_idle_timeout`]; returns how many. Sessions also expire lazily
    /// when next addressed, so calling this only bounds memory.
    pub fn sweep_idle(&self) -> usize {
        let n = self.inner.sessions.sweep();
        if n > 0 {
            tracing::debug!(expired = n, "idle client sessions dropped");
        }
        n
    }

    /// Spawns a task that calls [`Server::sweep_idle`] periodically until `cancel` fires (or the
    /// server is dropped). Needs a tokio runtime.
    pub fn spawn_expiry_task(&self, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let period = (self.inner.sessions.idle_timeout() / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(60));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    _ = tick.tick() => match weak.upgrade() {
                        Some(inner) => { Server { inner }.sweep_idle(); }
                        None => break,
                    },
                }
            }
        })
    }

    /// Whether the client of this session sent `notifications/initialized` (always `false` for
    /// an unknown session).
    pub fn is_session_ready(&self, session: Option<&str>) -> bool {
        self.inner
            .sessions
            .get(session)
            .is_some_and(|s: Arc<Session>| s.is_ready())
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.inner.config.name)
            .field("tools", &self.inner.tools.len())
            .field("sessions", &self.inner.sessions.count())
            .finish()
    }
}

/// A feature whose list can change, and the server says so.
fn list_changed() -> ListChangedCapability {
    ListChangedCapability {
        list_changed: Some(true),
        ..Default::default()
    }
}

/// A result as the JSON a response carries.
fn to_value(result: impl Serialize) -> Result<Value, ErrorObject> {
    serde_json::to_value(result).map_err(ErrorObject::internal_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Outbound;
    use mcp_protocol::Request;

    fn is_shareable<T: Clone + Send + Sync + 'static>(_: &T) {}
    fn is_send<T: Send>(_: &T) {}

    #[test]
    fn server_and_handle_future_can_cross_threads() {
        let server = Server::new(ServerConfig::new("t", "1"));
        is_shareable(&server);
        let message = Message::Request(Request::new(1, "ping", None));
        let future = server.handle(Some("s"), message, Outbound::none());
        is_send(&future);
    }
}
