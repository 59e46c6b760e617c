//! The polls: each loop keeps one poll open, reads what it hands over (one item, or a batch
//! for a registration granted `poll_items`), and turns every item into work: a request for the
//! server, a client's reply, a closed session.

use std::sync::Arc;
use std::time::Duration;

use mcp_protocol::jsonrpc::{ErrorObject, Message, Response};
use mcp_protocol::wire::PollItem;
use mcp_server::Outbound;
use reqwest::StatusCode;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, warn};

use super::{Inner, Registration};
use crate::backoff::Backoff;
use crate::redact::http_cause;

/// Extra time the HTTP client waits beyond the proxy's hold, so the proxy always answers a
/// poll (204) before the client gives up on it.
const POLL_SLACK: Duration = Duration::from_secs(15);

impl Inner {
    /// Keeps one poll open until `stop` (which drops the poll in flight) or `wind_down`
    /// (which lets it finish and opens no other); hands every item to a handler task.
    pub(super) async fn poll_loop(
        self: Arc<Self>,
        registration: Registration,
        stop: CancellationToken,
        wind_down: CancellationToken,
        lost: CancellationToken,
        handlers: TaskTracker,
        hard_stop: CancellationToken,
    ) {
        let mut backoff = Backoff::new(Duration::from_secs(self.config.retry_delay_seconds));
        let hold = self.config.poll_timeout_seconds;
        loop {
            if wind_down.is_cancelled() {
                return;
            }
            let request = self
                .http
                .get(self.poll_url.clone())
                .query(&[
                    ("session_id", &*registration.id),
                    ("timeout", &hold.to_string()),
                ])
                .timeout(Duration::from_secs(hold) + POLL_SLACK)
                .send();
            // Dropping a poll before its answer arrives is safe: the proxy puts the item back.
            let sent = tokio::select! {
                _ = stop.cancelled() => return,
                sent = request => sent,
            };
            let resp = match sent {
                Ok(resp) => resp,
                Err(e) => {
                    self.link_down(&http_cause(e));
                    if !self.pause(&mut backoff, &stop).await {
                        return;
                    }
                    continue;
                }
            };
            match resp.status() {
                StatusCode::NO_CONTENT => {
                    self.link_up();
                    backoff.reset();
                }
                StatusCode::OK => {
                    self.link_up();
                    backoff.reset();
                    // The item is ours now (handed over): read it whatever `stop` says.
                    match resp.bytes().await {
                        Ok(body) if registration.batched() => {
                            self.take_batch(&registration, &body, &handlers, &hard_stop)
                                .await
                        }
                        Ok(body) => {
                            self.take_item(&registration, &body, &handlers, &hard_stop)
                                .await
                        }
                        Err(e) => warn!("poll item lost while reading it: {}", http_cause(e)),
                    }
                }
                StatusCode::NOT_FOUND => {
                    lost.cancel();
                    return;
                }
                status => {
                    self.link_down(&format!("poll answered HTTP {status}"));
                    if !self.pause(&mut backoff, &stop).await {
                        return;
                    }
                }
            }
        }
    }

    /// Dispatches one poll item, or answers it with an error when it cannot be read.
    pub(super) async fn take_item(
        self: &Arc<Self>,
        registration: &Registration,
        body: &[u8],
        handlers: &TaskTracker,
        hard_stop: &CancellationToken,
    ) {
        match serde_json::from_slice::<PollItem>(body) {
            Ok(item) => self.dispatch(registration, item, handlers, hard_stop),
            Err(e) => self.refuse_unreadable(registration, body, &e).await,
        }
    }

    /// Dispatches each item of a batch (`{"items":[…]}`) in order; an item that cannot be
    /// read is answered with an error and does not hold up the others.
    async fn take_batch(
        self: &Arc<Self>,
        registration: &Registration,
        body: &[u8],
        handlers: &TaskTracker,
        hard_stop: &CancellationToken,
    ) {
        #[derive(serde::Deserialize)]
        struct Batch<'a> {
            #[serde(borrow)]
            items: Vec<&'a serde_json::value::RawValue>,
        }
        match serde_json::from_slice::<Batch>(body) {
            Ok(batch) => {
                for item in batch.items {
                    self.take_item(registration, item.get().as_bytes(), handlers, hard_stop)
                        .await;
                }
            }
            Err(e) => error!("unreadable batch of poll items, dropped: {e}"),
        }
    }

    /// Answers a poll item this client cannot read with an error, when the item names its
    /// request, so its client learns at once instead of waiting for the proxy's timeout.
    async fn refuse_unreadable(
        self: &Arc<Self>,
        registration: &Registration,
        body: &[u8],
        why: &serde_json::Error,
    ) {
        let request_id = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("request_id")?.as_str().map(str::to_owned));
        match request_id {
            Some(request_id) => {
                warn!("unreadable poll item ({why}); answering its request with an error");
                let error = Response::error(
                    None,
                    ErrorObject::invalid_request(format!(
                        "the server could not read this request: {why}"
                    )),
                );
                self.post_final(registration, &request_id, Some(error))
                    .await;
            }
            None => error!("unreadable poll item without a request id, dropped: {why}"),
        }
    }

    fn dispatch(
        self: &Arc<Self>,
        registration: &Registration,
        item: PollItem,
        handlers: &TaskTracker,
        hard_stop: &CancellationToken,
    ) {
        match item {
            PollItem::Request(item) => {
                if let Some(session) = &item.client_session {
                    let mut sessions = registration.sessions.lock().expect("sessions lock");
                    if !sessions.contains(session) {
                        sessions.insert(session.clone());
                    }
                }
                let inner = self.clone();
                let registration = registration.clone();
                let hard_stop = hard_stop.clone();
                handlers.spawn(async move {
                    tokio::select! {
                        _ = hard_stop.cancelled() => {}
                        _ = inner.serve_request(&registration, item) => {}
                    }
                });
            }
            PollItem::Reply(reply) => {
                let message = match Message::parse(reply.message.get().as_bytes()) {
                    Ok(m @ Message::Response(_)) => m,
                    _ => {
                        warn!("a reply item that is not a JSON-RPC response, dropped");
                        return;
                    }
                };
                let service = self.service.clone();
                handlers.spawn(async move {
                    service
                        .handle(reply.client_session.as_deref(), message, Outbound::none())
                        .await;
                });
            }
            PollItem::SessionClosed(closed) => {
                debug!("client session closed by the proxy");
                registration
                    .sessions
                    .lock()
                    .expect("sessions lock")
                    .remove(&closed.client_session);
                self.service.close_session(&closed.client_session);
            }
        }
    }
}
