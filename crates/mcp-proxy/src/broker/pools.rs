//! Pools of registrations and how a message picks its member: sticky for sessionless
//! traffic, fewest outstanding requests for anything new, and members that look dead
//! avoided while a healthy one exists (so a failover shows no gap).
//!
//! Also the operator's view of the pools (`GET /servers`): [`PoolInfo`] and [`MemberInfo`].

use std::cmp::Reverse;
use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;

use super::registration::Registration;

/// The registrations that share a name.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    /// Member session ids, in the order they joined.
    pub(crate) members: Vec<String>,
    /// The member that takes sessionless traffic while it lives.
    pub(crate) sticky: Option<String>,
}

impl Pool {
    /// The member with the fewest outstanding requests (the earliest on ties), preferring
    /// members not [suspect](Registration::is_suspect): one whose polls were dropped with
    /// their connections is most likely dead, and work sent there would wait for the grace
    /// and then fail.
    pub(crate) fn least_loaded<'a>(
        &'a self,
        registrations: &HashMap<String, Registration>,
    ) -> Option<&'a String> {
        self.least_loaded_for_session(registrations, &HashMap::new(), usize::MAX)
    }

    /// [`Pool::least_loaded`] for a new client session: ties go to the member with the fewest
    /// client sessions pinned, so sessions opened one after another on an idle pool spread.
    /// Members with `max_sessions` sessions or more are not chosen.
    pub(crate) fn least_loaded_for_session<'a>(
        &'a self,
        registrations: &HashMap<String, Registration>,
        sessions_per_member: &HashMap<String, usize>,
        max_sessions: usize,
    ) -> Option<&'a String> {
        let sessions = |m: &str| sessions_per_member.get(m).copied().unwrap_or(0);
        self.members
            .iter()
            .filter(|m| sessions(m) < max_sessions)
            .min_by_key(|m| {
                let sessions = sessions(m);
                registrations.get(*m).map_or(
                    (true, true, Reverse(None), usize::MAX, usize::MAX),
                    |r| {
                        // Among suspects, one that is only busy beats one whose connections
                        // dropped, then the one that had a poll open most recently.
                        let since = r.is_suspect().then_some(r.no_polls_since);
                        (
                            r.is_suspect(),
                            r.is_tainted(),
                            Reverse(since),
                            r.outstanding,
                            sessions,
                        )
                    },
                )
            })
    }

    /// The member for sessionless traffic: the sticky one, or a new pick that becomes sticky.
    /// A suspect sticky member gives way to the best pick (which may be itself).
    pub(crate) fn sticky_member(
        &mut self,
        registrations: &HashMap<String, Registration>,
    ) -> Option<String> {
        if let Some(s) = &self.sticky {
            if registrations.get(s).is_some_and(|r| !r.is_suspect()) {
                return Some(s.clone());
            }
        }
        let pick = self.least_loaded(registrations)?.clone();
        self.sticky = Some(pick.clone());
        Some(pick)
    }

    /// Removes a member (and its stickiness).
    pub(crate) fn remove(&mut self, id: &str) {
        self.members.retain(|m| m != id);
        if self.sticky.as_deref() == Some(id) {
            self.sticky = None;
        }
    }

    /// The operator's view of this pool (never a session id).
    pub(crate) fn info(
        &self,
        name: &str,
        registrations: &HashMap<String, Registration>,
        sessions_per_member: &HashMap<String, usize>,
        now: Instant,
    ) -> PoolInfo {
        let mut members: Vec<MemberInfo> = self
            .members
            .iter()
            .filter_map(|id| registrations.get(id))
            .map(|r| MemberInfo {
                member: r.generation,
                kind: if r.is_modern() { "modern" } else { "legacy" },
                age_seconds: secs(now.saturating_duration_since(r.registered_at)),
                idle_seconds: secs(now.saturating_duration_since(r.last_activity)),
                outstanding: r.outstanding,
                in_flight: r.in_flight,
                queued: r.queue.len(),
                polls_open: r.open_polls,
                delivery: if r.channel.is_some() {
                    "channel"
                } else {
                    "poll"
                },
                held_polls: r.held_polls(),
                client_sessions: sessions_per_member.get(r.id.as_str()).copied().unwrap_or(0),
                sticky: self.sticky.as_deref() == Some(r.id.as_str()),
                suspect: r.is_suspect(),
                protocol_versions: r
                    .capabilities
                    .as_ref()
                    .map(|c| c.protocol_versions.clone())
                    .unwrap_or_default(),
            })
            .collect();
        members.sort_by_key(|m| m.member);
        let named = (!name.is_empty()).then(|| name.to_owned());
        PoolInfo {
            message_path: match &named {
                Some(n) => format!("/servers/{n}/message"),
                None => "/message".to_owned(),
            },
            mcp_path: match &named {
                Some(n) => format!("/servers/{n}/mcp"),
                None => "/mcp".to_owned(),
            },
            name: named,
            outstanding: members.iter().map(|m| m.outstanding).sum(),
            members,
        }
    }
}

/// Seconds with millisecond precision, for JSON.
fn secs(d: std::time::Duration) -> f64 {
    (d.as_millis() as f64) / 1000.0
}

/// One pool as `GET /servers` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PoolInfo {
    /// The pool's name; `None` (JSON `null`) for the default pool.
    pub name: Option<String>,
    /// Where clients post JSON-RPC for this pool (`/message` or `/servers/NAME/message`).
    pub message_path: String,
    /// Where clients speak Streamable HTTP to this pool (`/mcp` or `/servers/NAME/mcp`).
    pub mcp_path: String,
    /// Pending requests over all members.
    pub outstanding: usize,
    /// Its live registrations, oldest first.
    pub members: Vec<MemberInfo>,
}

/// One registration as `GET /servers` shows it: a label, never its session id.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemberInfo {
    /// The registration's ordinal: unique for the proxy's lifetime, assigned in order of
    /// registration, not a credential.
    pub member: u64,
    /// `"modern"` (registered with capabilities) or `"legacy"` (the seed's reverse client).
    pub kind: &'static str,
    /// Seconds since it registered (or was re-adopted).
    pub age_seconds: f64,
    /// Seconds since its last poll started or ended, or its last answer.
    pub idle_seconds: f64,
    /// Pending requests routed to it (queued or handed over).
    pub outstanding: usize,
    /// Requests handed to one of its polls and not yet answered.
    pub in_flight: usize,
    /// Items waiting for a poll.
    pub queued: usize,
    /// Polls held open right now (an open channel counts as one).
    pub polls_open: usize,
    /// How its items travel now: `"channel"` (a WebSocket is open) or `"poll"`.
    pub delivery: &'static str,
    /// Polls it promised to keep open (0 for legacy).
    pub held_polls: u32,
    /// Client sessions of `/mcp` pinned to it.
    pub client_sessions: usize,
    /// It takes the pool's sessionless traffic.
    pub sticky: bool,
    /// It declared held polls and has none open, or one was dropped with its connection
    /// within the grace: probably dead, avoided for new work while a healthy member exists.
    pub suspect: bool,
    /// MCP versions it declared.
    pub protocol_versions: Vec<String>,
}
