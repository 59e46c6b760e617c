//! [`StdioBridge`]: one or many child processes speaking MCP over stdio (newline-delimited
//! JSON-RPC on stdin/stdout; stderr goes to our log), supervised and multiplexed.
//!
//! This file owns the bridge itself: which child serves which client session, and the
//! [`Service`] the reverse client calls. The rest lives in:
//! - `config`: [`StdioConfig`] and how a child is spawned (its environment, without the
//!   secrets of [`SECRET_ENV_VARS`]);
//! - `supervision`: a child's life: started, watched, restarted with backoff, stopped;
//! - `multiplex`: what travels over one child's stdio: ids and progress tokens rewritten,
//!   pending requests, the child's messages routed back to the right client;
//! - `stderr`: the child's stderr, drained to our log (lossy, capped lines, never closed early).

mod config;
mod multiplex;
mod stderr;
mod supervision;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use mcp_protocol::jsonrpc::{ErrorObject, Message, Response};
use mcp_server::Outbound;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use config::{StdioConfig, SECRET_ENV_VARS, TOKEN_ENV};
use supervision::Slot;

use super::closed::ClosedSessions;
use super::{unavailable, SessionMode};
use crate::service::{BoxFuture, Service, SessionSink};
use crate::Error;

/// Serves a stdio MCP program through the proxy (see [the module docs](crate::bridge)).
#[derive(Clone)]
pub struct StdioBridge {
    inner: Arc<BridgeInner>,
}

struct BridgeInner {
    config: StdioConfig,
    /// The shared child, or in per-client mode the child of sessionless traffic.
    main: Arc<Slot>,
    /// Per-client children and ended client sessions. A std mutex: no await under it; taken
    /// before `known` when both are.
    sessions: Mutex<Sessions>,
    /// Where session messages go (set by the reverse client).
    sink: Arc<OnceLock<SessionSink>>,
    /// Client sessions seen and not closed (shared mode broadcasts untied messages to them).
    known: Arc<Mutex<HashSet<String>>>,
    stop: CancellationToken,
}

/// The client sessions a bridge serves and those that ended.
#[derive(Default)]
struct Sessions {
    /// Per-client mode: the child of each client session.
    children: HashMap<String, Arc<Slot>>,
    /// Ended client sessions: a late message of one is refused and starts no child.
    closed: ClosedSessions,
}

impl StdioBridge {
    /// Starts the child (the shared one, or the sessionless one in per-client mode) and
    /// returns once it runs; an error if the program cannot be started at all.
    pub async fn start(config: StdioConfig) -> Result<StdioBridge, Error> {
        let stop = CancellationToken::new();
        let sink = Arc::new(OnceLock::new());
        let known = Arc::new(Mutex::new(HashSet::new()));
        let main = Slot::start(
            &config,
            "main".into(),
            None,
            &sink,
            &known,
            stop.child_token(),
        )?;
        info!(program = %config.program, mode = ?config.mode, "MCP server process started");
        Ok(StdioBridge {
            inner: Arc::new(BridgeInner {
                config,
                main,
                sessions: Mutex::new(Sessions::default()),
                sink,
                known,
                stop,
            }),
        })
    }

    /// Stops every child: closes its stdin, then SIGTERM, then SIGKILL, each after the grace.
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        let mut slots = vec![self.inner.main.clone()];
        slots.extend(
            self.inner
                .sessions
                .lock()
                .expect("sessions lock")
                .children
                .drain()
                .map(|(_, s)| s),
        );
        for slot in slots {
            slot.stopped().await;
        }
    }

    /// How many children are alive now (for tests and logs).
    pub fn children(&self) -> usize {
        let sessions = self.inner.sessions.lock().expect("sessions lock");
        std::iter::once(&self.inner.main)
            .chain(sessions.children.values())
            .filter(|s| s.current().is_some())
            .count()
    }

    /// The process id of the child serving `session` (`None`: sessionless/shared), if running.
    pub fn child_pid(&self, session: Option<&str>) -> Option<u32> {
        let slot = match (self.inner.config.mode, session) {
            (SessionMode::PerClient, Some(session)) => self
                .inner
                .sessions
                .lock()
                .expect("sessions lock")
                .children
                .get(session)
                .cloned()?,
            _ => self.inner.main.clone(),
        };
        slot.current().and_then(|g| g.pid)
    }

    /// The slot serving a message of `session`; in per-client mode a new one when `create`.
    /// A session that has ended is refused with -32001 "unknown session" (the proxy answers
    /// its client 404): its `session_closed` overtook this message, and a child started now
    /// would never be stopped.
    fn admit(&self, session: Option<&str>, create: bool) -> Result<Option<Arc<Slot>>, ErrorObject> {
        let inner = &self.inner;
        let Some(session) = session else {
            return Ok(Some(inner.main.clone()));
        };
        // One lock for the check and what follows, so a concurrent close cannot slip between.
        let mut sessions = inner.sessions.lock().expect("sessions lock");
        if sessions.closed.contains(session) {
            debug!(
                session = short(session),
                "a message of a client session that has ended; refused"
            );
            return Err(ErrorObject::unknown_session());
        }
        if !inner.stop.is_cancelled() {
            inner
                .known
                .lock()
                .expect("known lock")
                .insert(session.to_owned());
        }
        if inner.config.mode == SessionMode::Shared {
            return Ok(Some(inner.main.clone()));
        }
        if let Some(slot) = sessions.children.get(session) {
            return Ok(Some(slot.clone()));
        }
        if !create {
            return Ok(None);
        }
        if inner.stop.is_cancelled() {
            return Err(unavailable("the bridge is shutting down"));
        }
        if sessions.children.len() >= inner.config.max_children {
            warn!(
                max = inner.config.max_children,
                "per-client child limit reached; session refused"
            );
            return Err(unavailable(format!(
                "too many client sessions: this server runs at most {} processes",
                inner.config.max_children
            )));
        }
        let label = format!("session {}", short(session));
        let slot = Slot::start(
            &inner.config,
            label,
            Some(session.to_owned()),
            &inner.sink,
            &inner.known,
            inner.stop.child_token(),
        )
        .map_err(|e| unavailable(e.to_string()))?;
        sessions.children.insert(session.to_owned(), slot.clone());
        Ok(Some(slot))
    }
}

impl Service for StdioBridge {
    fn handle<'a>(
        &'a self,
        session: Option<&'a str>,
        message: Message,
        outbound: Outbound,
    ) -> BoxFuture<'a, Option<Response>> {
        Box::pin(async move {
            let create = !matches!(message, Message::Response(_));
            let slot = match self.admit(session, create) {
                Ok(Some(slot)) => slot,
                Ok(None) => return None,
                Err(error) => {
                    return match message {
                        Message::Request(r) => Some(Response::error(Some(r.id), error)),
                        _ => None,
                    }
                }
            };
            slot.handle(session, message, outbound).await
        })
    }

    /// Stops the session's child (per-client mode) or forgets its routes (shared mode), and
    /// remembers the session as ended so that a late message of it is refused.
    fn close_session(&self, session: &str) {
        let slot = {
            let mut sessions = self.inner.sessions.lock().expect("sessions lock");
            sessions.closed.insert(session);
            self.inner.known.lock().expect("known lock").remove(session);
            sessions.children.remove(session)
        };
        if let Some(slot) = slot {
            debug!(
                session = short(session),
                "client session closed: stopping its child"
            );
            slot.stop.cancel();
        } else {
            self.inner.main.forget_session(session);
        }
    }

    fn set_session_sink(&self, sink: SessionSink) {
        let _ = self.inner.sink.set(sink);
    }
}

impl Drop for BridgeInner {
    fn drop(&mut self) {
        // The last handle is gone: stop the children rather than leave them running.
        self.stop.cancel();
    }
}

/// A short prefix of a session id for logs (ids are credentials of a sort).
fn short(session: &str) -> &str {
    crate::redact::short_id(session)
}
