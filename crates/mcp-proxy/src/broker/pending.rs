//! Pending requests: the waiter a client holds for its answer, and the memory of answers
//! already delivered (so a retried final answer is a `duplicate`, not an error).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use mcp_protocol::jsonrpc::RequestId;
use serde_json::value::RawValue;
use tokio::sync::oneshot;

use super::sessions::StreamRef;
use super::Broker;
use crate::Error;

/// How long an answered request id is remembered for `duplicate` detection.
pub(crate) const ANSWERED_MEMORY: Duration = Duration::from_secs(600);
/// At most this many answered ids are remembered (oldest forgotten first).
pub(crate) const ANSWERED_CAP: usize = 65_536;

/// What a waiter finally receives.
pub(crate) type Outcome = Result<Box<RawValue>, Error>;

/// Where a pending request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// In its registration's queue.
    Queued,
    /// Returned by a poll; it will never be queued again.
    HandedOver,
}

/// A request (or notification) routed to a registration and not yet answered.
#[derive(Debug)]
pub(crate) struct Pending {
    /// The registration it was routed to.
    pub(crate) registration: String,
    /// That registration's generation.
    pub(crate) generation: u64,
    /// Queued or handed over.
    pub(crate) stage: Stage,
    /// The client waiting for one JSON answer; `None` for a notification (the server's `null`
    /// is just accepted) and for a streamed request.
    pub(crate) waiter: Option<oneshot::Sender<Outcome>>,
    /// The SSE stream that carries its interim messages and answer (`/mcp`, answered as SSE).
    pub(crate) stream: Option<StreamRef>,
    /// The client's JSON-RPC id (for error events on a stream and cancellations).
    pub(crate) client_id: Option<RequestId>,
    /// It came from `/mcp` (a server request to a JSON-answered client may use the GET stream).
    pub(crate) streamable: bool,
    /// Stateless era (2026-07-28): the client going away cancels it at the server.
    pub(crate) cancel_on_abandon: bool,
    /// The client session, for `reply` items.
    pub(crate) client_session: Option<String>,
    /// A notification nobody answered is forgotten after this.
    pub(crate) deadline: Instant,
}

/// A client's claim on the answer to its request.
///
/// Dropping it (the client went away, or its timeout fired) withdraws the request: a queued
/// one leaves the queue, a handed-over one is forgotten so its late answer is refused.
#[derive(Debug)]
pub struct Waiter {
    pub(crate) broker: Broker,
    pub(crate) request_id: String,
    pub(crate) rx: oneshot::Receiver<Outcome>,
}

impl Waiter {
    /// The proxy's id of this request (the poll item's `request_id`).
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// Waits for the final answer: the server's raw response, or why there is none.
    pub async fn answer(&mut self) -> Result<Box<RawValue>, Error> {
        match (&mut self.rx).await {
            Ok(outcome) => outcome,
            // The sender is only dropped without sending when the entry is discarded by
            // shutdown or removal, both of which send first; treat anything else as gone.
            Err(_) => Err(Error::ServerGone),
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.broker.abandon(&self.request_id);
    }
}

/// Request ids answered recently, with the registration that answered.
#[derive(Debug, Default)]
pub(crate) struct Answered {
    by_id: HashMap<String, String>,
    order: VecDeque<(Instant, String)>,
}

impl Answered {
    /// Remembers that `request_id` was answered by `registration`.
    pub(crate) fn insert(&mut self, request_id: String, registration: String, now: Instant) {
        if self.order.len() >= ANSWERED_CAP {
            if let Some((_, old)) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
        self.order.push_back((now, request_id.clone()));
        self.by_id.insert(request_id, registration);
    }

    /// Whether `registration` already answered `request_id`.
    pub(crate) fn contains(&self, request_id: &str, registration: &str) -> bool {
        self.by_id
            .get(request_id)
            .is_some_and(|r| r == registration)
    }

    /// Forgets answers older than [`ANSWERED_MEMORY`].
    pub(crate) fn evict(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) < ANSWERED_MEMORY {
                break;
            }
            if let Some((_, id)) = self.order.pop_front() {
                self.by_id.remove(&id);
            }
        }
    }
}
