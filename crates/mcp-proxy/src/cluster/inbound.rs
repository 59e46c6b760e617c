//! The subscriber's side of the relay: each frame on this instance's channel is taken here,
//! whether it brings a request to serve for another instance (served through this instance's
//! own router, its answer streamed back in frames within the size limit) or a piece of an
//! answer a relay here waits on (handed to that relay's queue).

use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::Router;
use bytes::Bytes;
use futures::StreamExt;
use mcp_protocol::wire::{PollBatch, PollItem, POLL_PATH};
use tower::ServiceExt;
use tracing::{debug, warn};

use super::frame::{self, Head, Refused, FRAME_HEAD_MAX};
use super::outbound::{Event, Failure};
use super::{lock, Cluster};
use crate::peer::ClientAddr;
use crate::routes::poll::BATCH_START;
use crate::topology::Relayed;
use crate::Error;

impl Cluster {
    /// Takes one frame from this instance's channel. A frame larger than this instance takes
    /// is dropped unparsed, and the relay its head names (when readable) fails at once.
    pub(super) fn on_frame(&self, bytes: &[u8], router: &Router) {
        let max_payload = self.max_body_bytes();
        let (head, payload) = match frame::decode(bytes, max_payload) {
            Ok(frame) => frame,
            Err(Refused::Unreadable) => {
                warn!(
                    len = bytes.len(),
                    "unreadable frame on the cluster channel dropped"
                );
                return;
            }
            Err(Refused::TooLarge(head)) => {
                // No ids: the head may carry a session id in a URI.
                warn!(
                    len = bytes.len(),
                    limit = max_payload + FRAME_HEAD_MAX,
                    kind = head.as_deref().map_or("unreadable", Head::kind),
                    "a frame larger than this instance takes was dropped \
                     (are all instances run with the same --max-body-bytes?)"
                );
                if let Some(head) = head {
                    self.refuse_frame(*head, max_payload);
                }
                return;
            }
        };
        match head {
            Head::Req {
                id,
                from,
                method,
                uri,
                headers,
                client,
            } => {
                self.inner.relayed_in.fetch_add(1, Ordering::Relaxed);
                let body = Bytes::copy_from_slice(payload);
                let cluster = self.clone();
                let router = router.clone();
                let key = (from.clone(), id);
                // The lock is held across the spawn so the task cannot finish (and remove
                // itself) before it is recorded.
                let mut inbound = lock(&self.inner.inbound);
                let task = tokio::spawn(async move {
                    let req = RelayedRequest {
                        method,
                        uri,
                        headers,
                        client,
                    };
                    cluster.serve(router, &from, id, req, body).await;
                    lock(&cluster.inner.inbound).remove(&(from, id));
                });
                inbound.insert(key, task.abort_handle());
            }
            Head::Cancel { id, from } => {
                let task = lock(&self.inner.inbound).remove(&(from, id));
                if let Some(task) = task {
                    debug!(relay = id, "relayed request cancelled by its caller");
                    task.abort();
                }
            }
            Head::Res {
                id,
                status,
                headers,
                whole,
                from,
            } => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                let head = Event::Head(status, frame::header_map(headers));
                if !self.deliver(id, head, false) && !whole {
                    // A stream keeps coming for a relay this instance no longer has (its
                    // cancel was lost): tell the instance serving it to stop.
                    self.cancel_at(id, from);
                    return;
                }
                if whole {
                    if !payload.is_empty() {
                        self.deliver(id, Event::Data(Bytes::copy_from_slice(payload)), false);
                    }
                    self.deliver(id, Event::End, true);
                }
            }
            Head::Data { id, from } => {
                if !self.deliver(id, Event::Data(Bytes::copy_from_slice(payload)), false) {
                    self.cancel_at(id, from);
                }
            }
            Head::End { id } => {
                self.deliver(id, Event::End, true);
            }
            Head::Fail {
                id,
                reason,
                too_large,
            } => {
                let failure = if too_large {
                    Failure::TooLarge(reason)
                } else {
                    Failure::Lost(reason)
                };
                self.deliver(id, Event::Fail(failure), true);
            }
        }
    }

    /// An oversized frame was dropped: the request it brought fails at its caller, the
    /// answer it carried fails here (and its home stops serving it).
    fn refuse_frame(&self, head: Head, max_payload: usize) {
        let why = format!(
            "a relayed request or answer was larger than a proxy instance takes \
             ({max_payload} bytes of body)"
        );
        match head {
            Head::Req { id, from, .. } => {
                let fail = Head::Fail {
                    id,
                    reason: why,
                    too_large: true,
                };
                let cluster = self.clone();
                tokio::spawn(async move {
                    let _ = cluster.publish(&from, frame::encode(&fail, b"")).await;
                });
            }
            Head::Res { id, from, .. } | Head::Data { id, from } => {
                self.inner.relays_failed.fetch_add(1, Ordering::Relaxed);
                if self.deliver(id, Event::Fail(Failure::TooLarge(why)), true) {
                    self.cancel_at(id, from);
                }
            }
            Head::End { id } | Head::Fail { id, .. } => {
                self.deliver(id, Event::Fail(Failure::TooLarge(why)), true);
            }
            Head::Cancel { .. } => {}
        }
    }

    /// Serves a relayed request through this instance's router and streams the answer back,
    /// in frames no larger than the body limit allows.
    async fn serve(&self, router: Router, from: &str, id: u64, req: RelayedRequest, body: Bytes) {
        let RelayedRequest {
            method,
            uri,
            headers,
            client,
        } = req;
        let is_poll = uri.split('?').next() == Some(POLL_PATH);
        let mut builder = Request::builder().method(method.as_str()).uri(uri.as_str());
        if let Some(map) = builder.headers_mut() {
            *map = frame::header_map(headers);
        }
        let mut req = match builder.body(Body::from(body)) {
            Ok(req) => req,
            Err(e) => {
                self.publish_fail(from, id, format!("unreadable relayed request: {e}"))
                    .await;
                return;
            }
        };
        req.extensions_mut().insert(Relayed);
        // The caller's address, as the instance it reached resolved it: per-address
        // registration and session quotas apply at the home as if it had come here.
        if let Some(ip) = client {
            req.extensions_mut().insert(ClientAddr(ip));
        }
        let response = match router.oneshot(req).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let (parts, body) = response.into_parts();
        let status = parts.status.as_u16();
        let headers = frame::header_pairs(&parts.headers);
        let max_payload = self.max_body_bytes();
        // A body of known length (JSON answers, errors, 202/204) is already complete: within
        // the limit it goes back in one frame, one publish instead of three. A poll's answer
        // (an item, whatever its size) is read whole too, to learn the request it hands over.
        let known = axum::body::HttpBody::size_hint(&body).exact();
        let hands_over = is_poll && status == 200;
        let Some(known) = known.filter(|&n| n <= max_payload as u64 || hands_over) else {
            // Nobody to tell when the caller is gone.
            let _ = self
                .stream_back(from, id, status, headers, body, max_payload)
                .await;
            return;
        };
        let bytes = match axum::body::to_bytes(body, known as usize).await {
            Ok(bytes) => bytes,
            Err(e) => {
                self.publish_fail(from, id, e.to_string()).await;
                return;
            }
        };
        // The item is handed over once it leaves here: if `from` is lost before passing it
        // on, its request must fail, not wait for a timeout. Only a publish nobody received
        // proves the item is lost; after a Redis timeout it may have arrived, and failing it
        // then could run the tool twice on a retry.
        let items = if hands_over {
            handed_over(&bytes)
        } else {
            Vec::new()
        };
        for request_id in items.iter().filter_map(carried_request) {
            self.track_transit(request_id.to_owned(), from);
        }
        let sent = if bytes.len() <= max_payload {
            let head = Head::Res {
                id,
                status,
                headers,
                whole: true,
                from: self.inner.id.clone(),
            };
            let frame = checked(frame::encode(&head, &bytes), bytes.len(), id);
            self.publish(from, frame).await
        } else {
            let body = Body::from(bytes);
            self.stream_back(from, id, status, headers, body, max_payload)
                .await
        };
        if let Err(Error::InstanceLost) = &sent {
            // The items never left: they go back to their queue (or fail when they cannot).
            for item in items {
                if let Some(request_id) = carried_request(&item).map(str::to_owned) {
                    self.transit_failed(&request_id, Some(item));
                }
            }
        }
    }

    /// Streams an answer back to `from` in frames: its head, pieces of its body within the
    /// limit, its end. `Err(InstanceLost)` when `from` received none of the first frames.
    async fn stream_back(
        &self,
        from: &str,
        id: u64,
        status: u16,
        headers: Vec<(String, String)>,
        body: Body,
        max_payload: usize,
    ) -> Result<(), Error> {
        let head = Head::Res {
            id,
            status,
            headers,
            whole: false,
            from: self.inner.id.clone(),
        };
        let head = checked(frame::encode(&head, b""), 0, id);
        self.publish(from, head).await?;
        let mut data = body.into_data_stream();
        while let Some(chunk) = data.next().await {
            let chunk = match chunk {
                Ok(bytes) => bytes,
                Err(e) => {
                    self.publish_fail(from, id, e.to_string()).await;
                    return Ok(());
                }
            };
            for piece in frame::pieces(chunk, max_payload) {
                let data = Head::Data {
                    id,
                    from: self.inner.id.clone(),
                };
                self.publish(from, frame::encode(&data, &piece)).await?;
            }
        }
        let _ = self
            .publish(from, frame::encode(&Head::End { id }, b""))
            .await;
        Ok(())
    }

    /// Tells `to` that relay `id` broke off, and why.
    async fn publish_fail(&self, to: &str, id: u64, reason: String) {
        let _ = self
            .publish(to, frame::encode(&fail_head(id, reason), b""))
            .await;
    }
}

/// The items a poll's answer hands over: one, or a batch (`{"items":[…]}`); none when it
/// does not read as either.
fn handed_over(body: &[u8]) -> Vec<PollItem> {
    // One parse either way: the poll route starts every batch with the same bytes.
    if body.starts_with(BATCH_START) {
        return serde_json::from_slice::<PollBatch>(body)
            .map(|batch| batch.items)
            .unwrap_or_default();
    }
    serde_json::from_slice::<PollItem>(body)
        .map(|item| vec![item])
        .unwrap_or_default()
}

/// The request a poll's item hands to its server (`request` items; `reply` and
/// `session_closed` items carry no client waiting on them).
fn carried_request(item: &PollItem) -> Option<&str> {
    match item {
        PollItem::Request(request) => Some(&request.request_id),
        _ => None,
    }
}

/// `frame` (an answer's head, with a payload of `payload_len` bytes), or in its place a
/// `fail` frame when its headers do not fit a frame's head.
fn checked(frame: Vec<u8>, payload_len: usize, id: u64) -> Vec<u8> {
    if frame::head_fits(&frame, payload_len) {
        return frame;
    }
    let fail = Head::Fail {
        id,
        reason: "the answer's headers are larger than a relay frame takes".into(),
        too_large: true,
    };
    frame::encode(&fail, b"")
}

/// The head of a `fail` frame that is not about size.
fn fail_head(id: u64, reason: String) -> Head {
    Head::Fail {
        id,
        reason,
        too_large: false,
    }
}

/// What a `req` frame asks this instance to serve, besides its body.
struct RelayedRequest {
    method: String,
    uri: String,
    headers: Vec<(String, String)>,
    /// The caller's address as the instance it reached resolved it.
    client: Option<std::net::IpAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_item_names_the_request_it_carries() {
        let carried = |body: &[u8]| {
            serde_json::from_slice::<PollItem>(body)
                .ok()
                .and_then(|item| carried_request(&item).map(str::to_owned))
        };
        let item = br#"{"request_id":"r-1","request":{"jsonrpc":"2.0","id":1,"method":"ping"}}"#;
        assert_eq!(carried(item), Some("r-1".into()));
        let escaped = br#"{"request":{"jsonrpc":"2.0","method":"x"},"request_id":"r-2"}"#;
        assert_eq!(carried(escaped), Some("r-2".into()));
        let reply = br#"{"type":"reply","request_id":"r-3","message":{"jsonrpc":"2.0","id":1,"result":{}}}"#;
        assert_eq!(carried(reply), None);
        assert_eq!(carried(b"not json"), None);
    }

    #[test]
    fn a_batch_hands_over_every_item_it_carries() {
        let ids = |body: &[u8]| -> Vec<String> {
            handed_over(body)
                .iter()
                .filter_map(carried_request)
                .map(str::to_owned)
                .collect()
        };
        let one = br#"{"request_id":"r-1","request":{"jsonrpc":"2.0","id":1,"method":"ping"}}"#;
        assert_eq!(ids(one), ["r-1"]);
        let batch =
            br#"{"items":[{"request_id":"r-1","request":{"jsonrpc":"2.0","id":1,"method":"ping"}},
            {"kind":"session_closed","client_session":"c-1"},
            {"request_id":"r-2","request":{"jsonrpc":"2.0","method":"x"}}]}"#;
        assert_eq!(ids(batch), ["r-1", "r-2"]);
        assert_eq!(handed_over(batch).len(), 3);
        assert!(handed_over(b"not json").is_empty());
    }
}
