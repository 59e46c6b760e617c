//! Relays this instance waits on: a request sent whole to its pool's home, and the events
//! of its answer on their way from the subscriber to the caller.
//!
//! # Bounded buffers
//! One subscriber task reads this instance's channel for every relay and never waits on a
//! caller: it puts each relay's events in that relay's [`Queue`] and goes on. A queue holds at
//! most [`RELAY_BUFFER_FRAMES`] frames and [`RELAY_BUFFER_BYTES`] bytes of body (an empty
//! queue takes one frame of any size the frame limit allows), and all queues of an instance
//! together at most [`RELAY_BUFFER_TOTAL_BYTES`]. A caller that reads too slowly for that (an
//! SSE stream nobody reads) loses its relay: what was queued is dropped, its answer breaks
//! off with an error, and the home is told to stop serving it, as when a caller disconnects.
//! Neither this instance's memory nor the other relays wait on it. A caller that keeps up
//! never has more than a few frames queued.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use tokio::sync::Notify;
use tracing::{debug, warn};

use super::frame::{self, Head};
use super::relay::Route;
use super::{lock, Cluster};
use crate::peer::ClientAddr;
use crate::Error;

/// The most frames one relay's answer may have waiting for its caller.
pub(crate) const RELAY_BUFFER_FRAMES: usize = 1024;
/// The most body bytes one relay's answer may have waiting for its caller (16 MiB).
pub(crate) const RELAY_BUFFER_BYTES: usize = 16 * 1024 * 1024;
/// The most body bytes the answers of all relays of an instance may have waiting (256 MiB).
pub(crate) const RELAY_BUFFER_TOTAL_BYTES: usize = 256 * 1024 * 1024;

/// A relayed request this instance waits on.
pub(crate) struct Outbound {
    /// The instance serving it.
    pub(crate) home: String,
    /// Where the subscriber puts its answer's events.
    queue: Arc<Queue>,
}

/// A piece of a relayed answer.
pub(crate) enum Event {
    /// The answer's status and headers; first.
    Head(StatusCode, HeaderMap),
    /// A piece of its body.
    Data(Bytes),
    /// The body is complete.
    End,
    /// The answer broke off.
    Fail(Failure),
}

/// Why a relayed answer broke off.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The home was lost, or its frames were: the caller may retry.
    Lost(String),
    /// The request or its answer was larger than a frame may be.
    TooLarge(String),
    /// The caller read too slowly and its queue filled.
    SlowReader,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Lost(why) | Failure::TooLarge(why) => f.write_str(why),
            Failure::SlowReader => f.write_str(
                "relayed answer cut off: its caller read too slowly and its buffer filled",
            ),
        }
    }
}

/// One relay's answer between the subscriber and the caller (see the module doc).
#[derive(Default)]
pub(crate) struct Queue {
    state: Mutex<QueueState>,
    /// Wakes the caller; one waiter, so a wake-up before it waits is kept (a permit).
    ready: Notify,
}

#[derive(Default)]
struct QueueState {
    events: VecDeque<Event>,
    /// Body bytes in `events`.
    bytes: usize,
    /// Nothing more is taken: the last event is in, or the caller left.
    closed: bool,
}

/// The queue is full: the relay fails.
#[derive(Debug)]
pub(crate) struct Overflow;

impl Queue {
    /// Queues `event` without waiting; [`Overflow`] when it does not fit this queue or the
    /// instance's total (`total`). The last event (end or failure) always fits.
    fn push(&self, event: Event, total: &AtomicUsize) -> Result<(), Overflow> {
        let mut state = lock(&self.state);
        if state.closed {
            return Ok(());
        }
        let len = match &event {
            Event::Data(bytes) => bytes.len(),
            _ => 0,
        };
        let last = matches!(event, Event::End | Event::Fail(_));
        // A queue without body bytes takes one piece of any size (a whole answer may be as
        // large as the body limit).
        let full = state.events.len() >= RELAY_BUFFER_FRAMES
            || (state.bytes > 0
                && (state.bytes + len > RELAY_BUFFER_BYTES
                    || total.load(Ordering::Relaxed) + len > RELAY_BUFFER_TOTAL_BYTES));
        if !last && full {
            return Err(Overflow);
        }
        state.bytes += len;
        total.fetch_add(len, Ordering::Relaxed);
        state.events.push_back(event);
        state.closed = last;
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    /// Ends the answer with `failure` at once: what was queued is dropped.
    fn fail(&self, failure: Failure, total: &AtomicUsize) {
        let mut state = lock(&self.state);
        if state.closed && state.events.is_empty() {
            return;
        }
        total.fetch_sub(state.bytes, Ordering::Relaxed);
        state.bytes = 0;
        state.events.clear();
        state.events.push_back(Event::Fail(failure));
        state.closed = true;
        drop(state);
        self.ready.notify_one();
    }

    /// The next event; `None` once the last was taken.
    async fn recv(&self, total: &AtomicUsize) -> Option<Event> {
        loop {
            {
                let mut state = lock(&self.state);
                if let Some(event) = state.events.pop_front() {
                    if let Event::Data(bytes) = &event {
                        state.bytes -= bytes.len();
                        total.fetch_sub(bytes.len(), Ordering::Relaxed);
                    }
                    return Some(event);
                }
                if state.closed {
                    return None;
                }
            }
            self.ready.notified().await;
        }
    }

    /// The caller left: nothing more is taken and what waits is dropped.
    fn close(&self, total: &AtomicUsize) {
        let mut state = lock(&self.state);
        total.fetch_sub(state.bytes, Ordering::Relaxed);
        state.bytes = 0;
        state.events.clear();
        state.closed = true;
    }
}

impl Outbound {
    /// Ends this relay's answer with `failure` (the relay has left the table).
    pub(crate) fn fail(&self, failure: Failure, total: &AtomicUsize) {
        self.queue.fail(failure, total);
    }
}

/// The caller's side of a relay: its answer's events. Dropped, it removes the relay, drops
/// what is still queued, and tells the home to stop unless the answer ended (the client
/// left).
struct Waiting {
    cluster: Cluster,
    id: u64,
    home: String,
    queue: Arc<Queue>,
    done: bool,
}

impl Waiting {
    async fn recv(&self) -> Option<Event> {
        self.queue.recv(&self.cluster.inner.relay_buffered).await
    }

    /// The answer ended (or failed for good): nothing to cancel at the home.
    fn finish(&mut self) {
        self.done = true;
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        lock(&self.cluster.inner.outbound).remove(&self.id);
        self.queue.close(&self.cluster.inner.relay_buffered);
        if !self.done {
            self.cluster
                .cancel_at(self.id, std::mem::take(&mut self.home));
        }
    }
}

impl Cluster {
    /// Opens an outbound relay to `home`.
    fn open_outbound(&self, home: &str) -> Waiting {
        self.inner.relayed_out.fetch_add(1, Ordering::Relaxed);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let queue = Arc::new(Queue::default());
        lock(&self.inner.outbound).insert(
            id,
            Outbound {
                home: home.to_owned(),
                queue: queue.clone(),
            },
        );
        Waiting {
            cluster: self.clone(),
            id,
            home: home.to_owned(),
            queue,
            done: false,
        }
    }

    /// Tells `home` to stop serving relay `id` (its caller left, or was cut off).
    pub(super) fn cancel_at(&self, id: u64, home: String) {
        if home.is_empty() {
            return;
        }
        let cluster = self.clone();
        let frame = frame::encode(
            &Head::Cancel {
                id,
                from: self.inner.id.clone(),
            },
            b"",
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = cluster.publish(&home, frame).await;
            });
        }
    }

    /// Hands `event` to relay `id`; `false` when no such relay waits here (any more). A
    /// relay whose caller reads too slowly fails here (see the module doc).
    pub(super) fn deliver(&self, id: u64, event: Event, last: bool) -> bool {
        let total = &self.inner.relay_buffered;
        let mut outbound = lock(&self.inner.outbound);
        let Some(relay) = outbound.get(&id) else {
            return false;
        };
        match relay.queue.push(event, total) {
            Ok(()) => {
                if last {
                    outbound.remove(&id);
                }
            }
            Err(Overflow) => {
                let relay = outbound.remove(&id).expect("the relay was just found");
                drop(outbound);
                self.inner.relays_failed.fetch_add(1, Ordering::Relaxed);
                warn!(
                    relay = id,
                    "relayed answer cut off: its caller reads too slowly (buffer full)"
                );
                relay.fail(Failure::SlowReader, total);
                self.cancel_at(id, relay.home);
            }
        }
        true
    }

    /// `GET path` answered by every other live instance, as JSON, within `deadline` (an
    /// instance that does not answer in time is left out). For operator views of the whole
    /// cluster (`/servers`).
    pub(crate) async fn gather(
        &self,
        path: &str,
        headers: &HeaderMap,
        deadline: std::time::Duration,
    ) -> Vec<serde_json::Value> {
        let others: Vec<String> = self
            .instances()
            .into_iter()
            .filter(|i| *i != self.inner.id)
            .collect();
        let asks = others.into_iter().map(|instance| {
            let mut req = Request::builder().method(Method::GET).uri(path);
            if let Some(map) = req.headers_mut() {
                *map = headers.clone();
            }
            let (parts, _) = req.body(()).expect("a GET of a fixed path").into_parts();
            async move {
                let ask = async {
                    let response = self
                        .forward(instance, parts, Bytes::new(), &Route::View)
                        .await;
                    if !response.status().is_success() {
                        return None;
                    }
                    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                        .await
                        .ok()?;
                    serde_json::from_slice(&body).ok()
                };
                tokio::time::timeout(deadline, ask).await.ok().flatten()
            }
        });
        futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Relays a request to `home` and answers with what it answers.
    pub(super) async fn forward(
        &self,
        home: String,
        parts: axum::http::request::Parts,
        body: Bytes,
        route: &Route,
    ) -> Response {
        if !self.inner.subscribed.load(Ordering::Relaxed) {
            // Answers published to this instance now would reach nobody.
            return route.fail(
                Error::ClusterUnavailable("no cluster subscription".into()),
                &body,
            );
        }
        let (head_deadline, idle_deadline) = self.deadlines();
        let mut waiting = self.open_outbound(&home);
        let id = waiting.id;
        let head = Head::Req {
            id,
            from: self.inner.id.clone(),
            method: parts.method.as_str().to_owned(),
            uri: parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned()),
            headers: {
                let mut headers = frame::header_pairs(&parts.headers);
                // HTTP/2 carries the host in the URI, not a header: the home checks `Host`.
                if let (None, Some(authority)) = (
                    parts.headers.get(axum::http::header::HOST),
                    parts.uri.authority(),
                ) {
                    headers.push(("host".to_owned(), authority.to_string()));
                }
                headers
            },
            client: parts.extensions.get::<ClientAddr>().map(|c| c.0),
        };
        let request = frame::encode(&head, &body);
        if !frame::head_fits(&request, body.len()) {
            waiting.finish();
            return route.headers_too_large(request.len() - body.len(), &body);
        }
        if let Err(e) = self.publish(&home, request).await {
            waiting.finish();
            self.inner.relays_failed.fetch_add(1, Ordering::Relaxed);
            return route.fail(e, &body);
        }
        debug!(relay = id, home = %home, path = %parts.uri.path(), "relayed");
        // Deadlines: a home that stays alive but whose frames were lost (a Redis hiccup)
        // must not leave the caller waiting forever. The head comes at the latest when the
        // longest poll hold or the request timeout ends; a stream sends keep-alive comments.
        let first = match tokio::time::timeout(head_deadline, waiting.recv()).await {
            Ok(event) => event,
            Err(_) => {
                warn!(relay = id, home = %home, "relayed request got no answer in time");
                return route.fail(Error::InstanceLost, &body);
            }
        };
        match first {
            Some(Event::Head(status, headers)) => {
                let events = futures::stream::unfold(waiting, move |mut waiting| async move {
                    let event = match tokio::time::timeout(idle_deadline, waiting.recv()).await {
                        Ok(event) => event,
                        Err(_) => Some(Event::Fail(Failure::Lost(
                            "relayed stream went silent".into(),
                        ))),
                    };
                    match event {
                        Some(Event::Data(bytes)) => Some((Ok(bytes), waiting)),
                        Some(Event::Fail(why)) => {
                            waiting.finish();
                            Some((Err(std::io::Error::other(why.to_string())), waiting))
                        }
                        Some(Event::End) | Some(Event::Head(..)) | None => {
                            waiting.finish();
                            None
                        }
                    }
                });
                let mut response = Response::new(Body::from_stream(events));
                *response.status_mut() = status;
                *response.headers_mut() = headers;
                response
                    .extensions_mut()
                    .insert(crate::topology::AnsweredElsewhere);
                response
            }
            Some(Event::Fail(Failure::TooLarge(why))) => {
                waiting.finish();
                warn!(relay = id, home = %home, %why, "relayed request failed");
                route.answer_too_large(&body)
            }
            Some(Event::Fail(why)) => {
                waiting.finish();
                warn!(relay = id, home = %home, %why, "relayed request failed");
                route.fail(Error::InstanceLost, &body)
            }
            Some(Event::Data(_)) | Some(Event::End) | None => {
                waiting.finish();
                route.fail(Error::InstanceLost, &body)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Event {
        Event::Data(Bytes::from(vec![b'x'; n]))
    }

    fn recv(queue: &Queue, total: &AtomicUsize) -> Option<Event> {
        futures::executor::block_on(queue.recv(total))
    }

    #[test]
    fn a_queue_nobody_reads_is_bounded_in_bytes_and_frames() {
        let total = AtomicUsize::new(0);
        let queue = Queue::default();
        // A queue without body bytes takes one piece however large; then the byte bound
        // applies.
        queue
            .push(Event::Head(StatusCode::OK, HeaderMap::new()), &total)
            .unwrap();
        queue.push(data(RELAY_BUFFER_BYTES + 1), &total).unwrap();
        assert!(queue.push(data(1), &total).is_err());
        assert!(matches!(recv(&queue, &total), Some(Event::Head(..))));
        assert!(matches!(recv(&queue, &total), Some(Event::Data(_))));
        assert_eq!(total.load(Ordering::Relaxed), 0);

        for _ in 0..RELAY_BUFFER_FRAMES {
            queue.push(data(1), &total).unwrap();
        }
        assert!(queue.push(data(1), &total).is_err(), "frames are bounded");
        assert_eq!(total.load(Ordering::Relaxed), RELAY_BUFFER_FRAMES);
        // The last event always fits; after it nothing more is taken.
        queue.push(Event::End, &total).unwrap();
        queue.push(data(1), &total).unwrap();
        assert_eq!(total.load(Ordering::Relaxed), RELAY_BUFFER_FRAMES);
        // The caller leaving drops what waits, and the instance's total with it.
        queue.close(&total);
        assert_eq!(total.load(Ordering::Relaxed), 0);
        assert!(recv(&queue, &total).is_none());
    }

    #[test]
    fn a_failed_queue_drops_what_waits_and_says_why() {
        let total = AtomicUsize::new(0);
        let queue = Queue::default();
        queue.push(data(10), &total).unwrap();
        queue.push(data(10), &total).unwrap();
        queue.fail(Failure::SlowReader, &total);
        assert_eq!(total.load(Ordering::Relaxed), 0);
        assert!(matches!(
            recv(&queue, &total),
            Some(Event::Fail(Failure::SlowReader))
        ));
        assert!(recv(&queue, &total).is_none());
    }

    #[test]
    fn the_instance_total_bounds_every_queue_together() {
        let total = AtomicUsize::new(RELAY_BUFFER_TOTAL_BYTES - 5);
        let queue = Queue::default();
        queue.push(data(1), &total).unwrap();
        assert!(queue.push(data(5), &total).is_err());
        queue.push(data(4), &total).unwrap();
    }
}
