//! [`ClosedSessions`]: the client sessions a bridge saw end lately. Several polls are held at
//! once, so a `session_closed` item can overtake a request of its session; remembering the
//! ended sessions lets the bridge refuse that request (JSON-RPC -32001, which the proxy turns
//! into 404) instead of starting a child or an upstream session nobody would ever close.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

/// How many ended client sessions a bridge remembers; past that the oldest is forgotten.
pub(crate) const CLOSED_SESSIONS_REMEMBERED: usize = 4096;

/// A bounded set of ended client sessions, oldest evicted first.
pub(crate) struct ClosedSessions {
    capacity: usize,
    /// Insertion order, for eviction.
    order: VecDeque<Arc<str>>,
    set: HashSet<Arc<str>>,
}

impl Default for ClosedSessions {
    fn default() -> Self {
        ClosedSessions::with_capacity(CLOSED_SESSIONS_REMEMBERED)
    }
}

impl ClosedSessions {
    /// Remembers at most `capacity` sessions (at least one).
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        ClosedSessions {
            capacity: capacity.max(1),
            order: VecDeque::new(),
            set: HashSet::new(),
        }
    }

    /// Remembers that `session` ended.
    pub(crate) fn insert(&mut self, session: &str) {
        if self.set.contains(session) {
            return;
        }
        if self.order.len() >= self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.set.remove(&oldest);
            }
        }
        let session: Arc<str> = session.into();
        self.order.push_back(session.clone());
        self.set.insert(session);
    }

    /// Whether `session` ended (lately enough to be remembered).
    pub(crate) fn contains(&self, session: &str) -> bool {
        self.set.contains(session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_session_is_forgotten_first() {
        let mut closed = ClosedSessions::with_capacity(3);
        for s in ["a", "b", "c", "a"] {
            closed.insert(s);
        }
        assert!(closed.contains("a") && closed.contains("b") && closed.contains("c"));
        closed.insert("d");
        assert!(!closed.contains("a"), "the oldest went first");
        assert!(closed.contains("b") && closed.contains("d"));
        assert_eq!(closed.order.len(), 3);
        assert_eq!(closed.set.len(), 3);
    }

    #[test]
    fn the_default_remembers_a_few_thousand() {
        let mut closed = ClosedSessions::default();
        for i in 0..CLOSED_SESSIONS_REMEMBERED + 10 {
            closed.insert(&format!("session-{i}"));
        }
        assert!(!closed.contains("session-9"));
        assert!(closed.contains("session-10"));
        assert_eq!(closed.set.len(), CLOSED_SESSIONS_REMEMBERED);
    }
}
