//! One registered MCP server: its kind, its pool, its queue and how alive it looks.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use mcp_protocol::wire::{granted_poll_items, RegistrationCapabilities, MODERN_SESSION_PREFIX};
use tokio::sync::Notify;

use super::queue::Queue;
use crate::auth::TokenId;
use crate::Config;

/// A registration's state inside the broker.
#[derive(Debug)]
pub(crate) struct Registration {
    /// The session id, the reverse client's only handle.
    pub(crate) id: String,
    /// Tells this registration apart from an earlier one with the same id (re-adoption).
    pub(crate) generation: u64,
    /// The pool it serves (`""` is the default pool).
    pub(crate) pool: String,
    /// What it declared; `None` for a legacy (seed) registration.
    pub(crate) capabilities: Option<RegistrationCapabilities>,
    /// The server token it registered with (auth on): the only one its polls, answers and
    /// deregistration are accepted with.
    pub(crate) owner: Option<TokenId>,
    /// The caller its registration quota is counted on.
    pub(crate) holder: Option<super::quota::Holder>,
    /// Items waiting for a poll.
    pub(crate) queue: Queue,
    /// Wakes held polls: `notify_one` per queued item, `notify_waiters` when it goes away.
    pub(crate) notify: Arc<Notify>,
    /// Polls currently held open.
    pub(crate) open_polls: usize,
    /// Since when no poll has been open (meaningful while `open_polls == 0`).
    pub(crate) no_polls_since: Instant,
    /// Last poll start or end, or answer posted.
    pub(crate) last_activity: Instant,
    /// When it registered (or was re-adopted).
    pub(crate) registered_at: Instant,
    /// A poll was dropped with its connection: it is suspect until then (the end of the
    /// liveness grace), unless a poll returns empty first. Polls that open meanwhile do not
    /// clear it: requests the dead server sent just before it died are still read.
    pub(crate) suspect_until: Option<Instant>,
    /// Pending requests routed here (queued or handed over).
    pub(crate) outstanding: usize,
    /// Pending requests handed to a poll and not yet answered.
    pub(crate) in_flight: usize,
    /// The open WebSocket channel, if any (its number, and the token cancelled when a newer
    /// one replaces it).
    pub(crate) channel: Option<(u64, tokio_util::sync::CancellationToken)>,
}

impl Registration {
    /// A fresh registration with nothing queued and no poll open yet.
    pub(crate) fn new(
        id: String,
        generation: u64,
        pool: String,
        capabilities: Option<RegistrationCapabilities>,
        now: Instant,
    ) -> Self {
        Registration {
            id,
            generation,
            pool,
            capabilities,
            owner: None,
            holder: None,
            queue: Queue::default(),
            notify: Arc::new(Notify::new()),
            open_polls: 0,
            no_polls_since: now,
            last_activity: now,
            registered_at: now,
            suspect_until: None,
            outstanding: 0,
            in_flight: 0,
            channel: None,
        }
    }

    /// The most items one poll answer carries for it (1: the seed's one item per answer).
    pub(crate) fn poll_items(&self) -> usize {
        let asked = self.capabilities.as_ref().map_or(1, |c| c.poll_items);
        granted_poll_items(asked) as usize
    }

    /// Whether it registered with `capabilities`.
    pub(crate) fn is_modern(&self) -> bool {
        self.capabilities.is_some()
    }

    /// How many polls it promised to keep open (0 for legacy).
    pub(crate) fn held_polls(&self) -> u32 {
        self.capabilities.as_ref().map_or(0, |c| c.held_polls)
    }

    /// Whether it looks dead: it declared held polls and has none open, or one of its polls
    /// was dropped with its connection within the grace ([`Registration::is_tainted`]). New
    /// work avoids a suspect member while a healthy one exists; the sweeper removes it once
    /// the grace passes without a poll.
    pub(crate) fn is_suspect(&self) -> bool {
        self.held_polls() > 0 && (self.open_polls == 0 || self.is_tainted())
    }

    /// A poll was dropped with its connection and nothing has proved it alive since: a
    /// stronger sign of death than having no poll open, which a busy server shows for a
    /// moment whenever all its polls just returned items.
    pub(crate) fn is_tainted(&self) -> bool {
        self.suspect_until.is_some_and(|t| Instant::now() < t)
    }

    /// Whether items should carry `client_session`.
    pub(crate) fn takes_client_sessions(&self) -> bool {
        self.capabilities
            .as_ref()
            .is_some_and(|c| c.client_sessions)
    }

    /// Whether it lists `version` among its protocol versions.
    pub(crate) fn speaks(&self, version: &str) -> bool {
        self.capabilities
            .as_ref()
            .is_some_and(|c| c.protocol_versions.iter().any(|v| v == version))
    }

    /// Why it must be removed now, if it must: dead (held polls all gone past the grace) or
    /// expired (no held polls declared, idle with nothing in flight past the expiry).
    pub(crate) fn verdict(&self, now: Instant, config: &Config) -> Option<&'static str> {
        if self.open_polls > 0 {
            return None;
        }
        if self.held_polls() > 0 {
            (now.saturating_duration_since(self.no_polls_since) >= config.liveness_grace)
                .then_some("dead: no poll reopened within the grace")
        } else {
            (self.in_flight == 0
                && now.saturating_duration_since(self.last_activity) >= config.expiry)
                .then_some("expired: idle with nothing in flight")
        }
    }
}

/// A new legacy session id: 32 lowercase hex digits, as the seed's proxy minted.
pub(crate) fn new_legacy_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A new modern session id: `m-` and 32 lowercase hex digits.
pub(crate) fn new_modern_id() -> String {
    format!("{MODERN_SESSION_PREFIX}{}", uuid::Uuid::new_v4().simple())
}

/// A new proxy request id for a poll item: `r-` and 32 hex digits, random and opaque.
pub(crate) fn new_request_id() -> String {
    format!("r-{}", uuid::Uuid::new_v4().simple())
}

/// A new client session id: `c-` and 32 hex digits.
pub(crate) fn new_client_session_id() -> String {
    format!("c-{}", uuid::Uuid::new_v4().simple())
}

/// Displays only the start of a secret id (session ids are credentials): `3f2a9c0e…`.
pub(crate) struct Short<'a>(pub(crate) &'a str);

impl fmt::Display for Short<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keep = if self.0.starts_with(MODERN_SESSION_PREFIX) || self.0.starts_with("c-") {
            8
        } else {
            6
        };
        match self.0.get(..keep) {
            Some(prefix) if self.0.len() > keep => write!(f, "{prefix}…"),
            _ => write!(f, "{}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_protocol::wire::SessionIdKind;

    #[test]
    fn ids_have_their_formats() {
        assert_eq!(
            SessionIdKind::of(&new_legacy_id()),
            Some(SessionIdKind::Legacy)
        );
        assert_eq!(
            SessionIdKind::of(&new_modern_id()),
            Some(SessionIdKind::Modern)
        );
        assert!(new_request_id().starts_with("r-"));
        assert_ne!(new_request_id(), new_request_id());
    }

    #[test]
    fn short_hides_most_of_an_id() {
        let id = "3f2a9c0e5b7d4e1f8a6c2b9d0e4f7a13";
        assert_eq!(Short(id).to_string(), "3f2a9c…");
        assert_eq!(Short("m-9b1e44c07a2d4f3e8c5b").to_string(), "m-9b1e44…");
        assert_eq!(Short("ab").to_string(), "ab");
    }
}
