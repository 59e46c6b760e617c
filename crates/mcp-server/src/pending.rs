//! Requests the server sent to a client, waiting for the client's answer.
//!
//! Each waits on a `oneshot` keyed by the id the server gave the request. The answer arrives as
//! a [`mcp_protocol::Response`] through [`crate::Server::handle`], which must name the same
//! client session the request was sent in: one client cannot answer for another. The entry is
//! removed by a drop guard, so a handler that is cancelled or dropped leaves nothing behind, and
//! the client is told with `notifications/cancelled` that the request was abandoned.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use mcp_protocol::jsonrpc::Outcome;
use mcp_protocol::mcp::methods;
use mcp_protocol::mcp::notifications::CancelledParams;
use mcp_protocol::{ErrorObject, Message, Notification, RequestId, Response};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::outbound::Outbound;

/// The prefix of the ids of server-to-client requests.
const ID_PREFIX: &str = "mcp-server-";

type Answer = Result<Value, ErrorObject>;

#[derive(Debug)]
struct Waiter {
    /// The client session the request went to (`None`: sessionless).
    session: Option<String>,
    tx: oneshot::Sender<Answer>,
}

/// The server's table of requests awaiting a client's answer.
///
/// `std::sync::Mutex`: inserts and removals only, never held across an `.await`.
#[derive(Debug, Default)]
pub(crate) struct PendingClientRequests {
    next_id: AtomicU64,
    waiters: Mutex<HashMap<RequestId, Waiter>>,
}

impl PendingClientRequests {
    fn waiters(&self) -> MutexGuard<'_, HashMap<RequestId, Waiter>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves a fresh id for a request to `session`'s client; await the returned receiver.
    /// If the guard drops before the answer came, the client is told on `outbound`.
    pub(crate) fn register(
        self: &Arc<Self>,
        session: Option<&str>,
        outbound: Outbound,
    ) -> (RequestId, oneshot::Receiver<Answer>, PendingGuard) {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let id = RequestId::String(format!("{ID_PREFIX}{n}"));
        let (tx, rx) = oneshot::channel();
        self.waiters().insert(
            id.clone(),
            Waiter {
                session: session.map(str::to_owned),
                tx,
            },
        );
        let guard = PendingGuard {
            table: Arc::clone(self),
            id: id.clone(),
            outbound,
        };
        (id, rx, guard)
    }

    /// Delivers a client's answer; `false` when nothing (in that session) waits for it.
    pub(crate) fn resolve(&self, session: Option<&str>, response: Response) -> bool {
        let Some(id) = response.id else {
            return false;
        };
        let mut waiters = self.waiters();
        match waiters.get(&id) {
            Some(w) if w.session.as_deref() == session => {}
            _ => return false,
        }
        let Some(waiter) = waiters.remove(&id) else {
            return false;
        };
        drop(waiters);
        let answer = match response.outcome {
            Outcome::Result(v) => Ok(v),
            Outcome::Error(e) => Err(e),
        };
        waiter.tx.send(answer).is_ok()
    }

    /// How many requests wait for an answer.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.waiters().len()
    }
}

/// Removes a pending request's entry when its waiter goes away, answered or not; when not,
/// tells the client the request is abandoned.
#[derive(Debug)]
pub(crate) struct PendingGuard {
    table: Arc<PendingClientRequests>,
    id: RequestId,
    outbound: Outbound,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        let unanswered = self.table.waiters().remove(&self.id).is_some();
        if unanswered {
            let params = CancelledParams {
                request_id: Some(self.id.clone()),
                reason: Some("the server no longer needs the answer".into()),
            };
            let params = serde_json::to_value(params).ok();
            self.outbound.send(Message::Notification(Notification::new(
                methods::NOTIFICATION_CANCELLED,
                params,
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn answers_reach_their_waiter_only_from_the_same_session() {
        let table = Arc::new(PendingClientRequests::default());
        let (id, rx, guard) = table.register(Some("a"), Outbound::none());
        assert!(!table.resolve(Some("b"), Response::success(id.clone(), json!(1))));
        assert!(!table.resolve(None, Response::success(id.clone(), json!(1))));
        assert!(table.resolve(Some("a"), Response::success(id.clone(), json!(2))));
        assert_eq!(rx.await.unwrap(), Ok(json!(2)));
        // Late duplicate: nobody waits any more.
        assert!(!table.resolve(Some("a"), Response::success(id, json!(3))));
        drop(guard);
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn dropped_waiters_leave_nothing_behind() {
        let table = Arc::new(PendingClientRequests::default());
        let (tx, mut sent) = tokio::sync::mpsc::unbounded_channel();
        let (id1, _rx, guard) = table.register(None, Outbound::channel(tx));
        let (id2, _rx2, _g2) = table.register(None, Outbound::none());
        assert_ne!(id1, id2);
        drop(guard);
        assert_eq!(table.len(), 1);
        let Ok(Message::Notification(n)) = sent.try_recv() else {
            panic!("the client is told")
        };
        assert_eq!(n.method, "notifications/cancelled");
        assert_eq!(
            n.params.unwrap()["requestId"],
            serde_json::to_value(&id1).unwrap()
        );
    }
}
