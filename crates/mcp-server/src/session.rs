//! Per-client session state and the store that creates, finds and expires sessions.
//!
//! A client session starts with `initialize` under the id the transport gives it, and ends by
//! [`SessionStore::close`] (the proxy's `session_closed`) or after
//! [`crate::ServerConfig::session_idle_timeout`] without a message while nothing runs.
//! Sessionless traffic (`None`) shares one session that needs no handshake and never expires.
//!
//! The locks here are `std::sync::Mutex`: they guard a few fields, nothing awaits while holding
//! them, and they are never held across calls into user code.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mcp_protocol::mcp::lifecycle::{ClientCapabilities, Implementation};
use mcp_protocol::mcp::notifications::LoggingLevel;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Error;

/// One client session's state.
#[derive(Debug)]
pub(crate) struct Session {
    /// Cancelled when the session ends; every request of the session runs under a child token.
    cancel: CancellationToken,
    state: Mutex<SessionState>,
}

#[derive(Debug)]
struct SessionState {
    /// The version negotiated by `initialize` (`None` before it, or for the shared session).
    protocol_version: Option<String>,
    /// Who the client said it is.
    client_info: Option<Implementation>,
    /// What the client said it can do; `None` when it never said.
    client_capabilities: Option<ClientCapabilities>,
    /// The client sent `notifications/initialized`.
    ready: bool,
    /// The lowest log level the client wants (`logging/setLevel`); `None` sends everything.
    log_level: Option<LoggingLevel>,
    /// When the client was last heard from, or a request of it last finished.
    last_seen: Instant,
    /// Requests of this session still running: a session is not idle while one runs.
    in_flight: usize,
    /// Resource URIs the client subscribed to (`resources/subscribe`).
    subscriptions: HashSet<String>,
}

/// What `initialize` told the server.
pub(crate) struct Handshake {
    pub(crate) protocol_version: String,
    pub(crate) client_info: Implementation,
    pub(crate) client_capabilities: ClientCapabilities,
}

impl Session {
    fn new() -> Arc<Self> {
        Arc::new(Session {
            cancel: CancellationToken::new(),
            state: Mutex::new(SessionState {
                protocol_version: None,
                client_info: None,
                client_capabilities: None,
                ready: false,
                log_level: None,
                last_seen: Instant::now(),
                in_flight: 0,
                subscriptions: HashSet::new(),
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, SessionState> {
        // A panic never happens under this lock (plain field updates), so poisoning is moot.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The token cancelled when the session ends.
    pub(crate) fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Records the handshake (a repeated `initialize` replaces the previous one).
    pub(crate) fn initialize(&self, handshake: Handshake) {
        let mut s = self.state();
        s.protocol_version = Some(handshake.protocol_version);
        s.client_info = Some(handshake.client_info);
        s.client_capabilities = Some(handshake.client_capabilities);
        s.ready = false;
        s.last_seen = Instant::now();
    }

    /// The client sent `notifications/initialized`.
    pub(crate) fn mark_ready(&self) {
        self.state().ready = true;
    }

    /// Whether `notifications/initialized` arrived.
    pub(crate) fn is_ready(&self) -> bool {
        self.state().ready
    }

    /// The negotiated protocol version, if `initialize` happened.
    pub(crate) fn protocol_version(&self) -> Option<String> {
        self.state().protocol_version.clone()
    }

    /// The client's capabilities, if it declared them.
    pub(crate) fn client_capabilities(&self) -> Option<ClientCapabilities> {
        self.state().client_capabilities.clone()
    }

    /// The client's implementation info, if it gave it.
    pub(crate) fn client_info(&self) -> Option<Implementation> {
        self.state().client_info.clone()
    }

    /// Sets the lowest log level the client wants.
    pub(crate) fn set_log_level(&self, level: LoggingLevel) {
        self.state().log_level = Some(level);
    }

    /// The lowest log level the client wants; `None` when it never said.
    pub(crate) fn log_level(&self) -> Option<LoggingLevel> {
        self.state().log_level
    }

    /// Subscribes the client to updates of `uri`.
    pub(crate) fn subscribe(&self, uri: String) {
        self.state().subscriptions.insert(uri);
    }

    /// Ends the client's subscription to `uri`; `false` if there was none.
    pub(crate) fn unsubscribe(&self, uri: &str) -> bool {
        self.state().subscriptions.remove(uri)
    }

    /// Whether the client subscribed to `uri`.
    pub(crate) fn is_subscribed(&self, uri: &str) -> bool {
        self.state().subscriptions.contains(uri)
    }

    /// Whether the client wants a log message of `level` (everything until it sets a level).
    pub(crate) fn wants_log(&self, level: LoggingLevel) -> bool {
        self.log_level().is_none_or(|min| level >= min)
    }

    /// The client was heard from.
    pub(crate) fn touch(&self) {
        self.state().last_seen = Instant::now();
    }

    /// Marks a request as running until the guard drops.
    pub(crate) fn begin_request(self: &Arc<Self>) -> ActivityGuard {
        let mut s = self.state();
        s.in_flight += 1;
        s.last_seen = Instant::now();
        ActivityGuard {
            session: Arc::clone(self),
        }
    }

    fn is_idle(&self, now: Instant, timeout: Duration) -> bool {
        let s = self.state();
        s.in_flight == 0 && now.saturating_duration_since(s.last_seen) >= timeout
    }
}

/// Keeps a session busy (not idle) while a request of it runs.
#[derive(Debug)]
pub(crate) struct ActivityGuard {
    session: Arc<Session>,
}

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        let mut s = self.session.state();
        s.in_flight = s.in_flight.saturating_sub(1);
        s.last_seen = Instant::now();
    }
}

/// Every client session of one server, plus the shared sessionless one.
#[derive(Debug)]
pub(crate) struct SessionStore {
    /// Client sessions by the id the transport gave them.
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// The one session all sessionless traffic shares; it needs no handshake and never expires.
    shared: Arc<Session>,
    idle_timeout: Duration,
    max_sessions: usize,
}

impl SessionStore {
    /// An empty store with these limits.
    pub(crate) fn new(idle_timeout: Duration, max_sessions: usize) -> Self {
        SessionStore {
            sessions: Mutex::new(HashMap::new()),
            shared: Session::new(),
            idle_timeout,
            max_sessions,
        }
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The session `id` names (`None`: the shared one), unless it is unknown or has expired.
    pub(crate) fn get(&self, id: Option<&str>) -> Option<Arc<Session>> {
        let Some(id) = id else {
            return Some(Arc::clone(&self.shared));
        };
        let mut sessions = self.sessions();
        let session = sessions.get(id)?;
        if session.is_idle(Instant::now(), self.idle_timeout) {
            // Expire lazily, so a server nobody sweeps still forgets idle sessions.
            if let Some(s) = sessions.remove(id) {
                s.cancel.cancel();
            }
            return None;
        }
        Some(Arc::clone(session))
    }

    /// The session for an `initialize`: the existing one, or a new one if there is room.
    pub(crate) fn get_or_create(&self, id: Option<&str>) -> Result<Arc<Session>, Error> {
        let Some(id) = id else {
            return Ok(Arc::clone(&self.shared));
        };
        if let Some(s) = self.get(Some(id)) {
            return Ok(s);
        }
        if self.count() >= self.max_sessions {
            self.sweep();
        }
        let mut sessions = self.sessions();
        if sessions.len() >= self.max_sessions {
            return Err(Error::TooManySessions {
                limit: self.max_sessions,
            });
        }
        Ok(Arc::clone(
            sessions.entry(id.to_owned()).or_insert_with(Session::new),
        ))
    }

    /// Ends a client session: forgets it and cancels what runs in it. `false` if it was unknown.
    pub(crate) fn close(&self, id: &str) -> bool {
        let removed = self.sessions().remove(id);
        match removed {
            Some(s) => {
                s.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Drops every session idle for longer than the timeout; returns how many.
    pub(crate) fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut sessions = self.sessions();
        let before = sessions.len();
        sessions.retain(|_, s| {
            let idle = s.is_idle(now, self.idle_timeout);
            if idle {
                s.cancel.cancel();
            }
            !idle
        });
        before - sessions.len()
    }

    /// Every client session held and not expired, with its id (a snapshot: the lock is released
    /// before the caller talks to any of them).
    pub(crate) fn all(&self) -> Vec<(String, Arc<Session>)> {
        let now = Instant::now();
        self.sessions()
            .iter()
            .filter(|(_, s)| !s.is_idle(now, self.idle_timeout))
            .map(|(id, s)| (id.clone(), Arc::clone(s)))
            .collect()
    }

    /// How many client sessions are held (the shared sessionless one is not counted).
    pub(crate) fn count(&self) -> usize {
        self.sessions().len()
    }

    /// The idle timeout.
    pub(crate) fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(max: usize) -> SessionStore {
        SessionStore::new(Duration::from_secs(60), max)
    }

    #[tokio::test(start_paused = true)]
    async fn idle_sessions_expire_unless_busy() {
        let s = store(10);
        let a = s.get_or_create(Some("a")).unwrap();
        let b = s.get_or_create(Some("b")).unwrap();
        let busy = b.begin_request();
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(s.sweep(), 1);
        assert!(a.cancel_token().is_cancelled());
        assert!(s.get(Some("a")).is_none());
        assert!(s.get(Some("b")).is_some());
        drop(busy);
        tokio::time::advance(Duration::from_secs(61)).await;
        // Lazy expiry on access, without a sweep.
        assert!(s.get(Some("b")).is_none());
        assert_eq!(s.count(), 0);
        // The shared session never expires.
        assert!(s.get(None).is_some());
    }

    #[test]
    fn close_and_limit() {
        let s = store(1);
        s.get_or_create(Some("a")).unwrap();
        assert!(matches!(
            s.get_or_create(Some("b")),
            Err(Error::TooManySessions { limit: 1 })
        ));
        assert!(s.get_or_create(Some("a")).is_ok());
        assert!(s.close("a"));
        assert!(!s.close("a"));
        assert!(s.get_or_create(Some("b")).is_ok());
    }
}
