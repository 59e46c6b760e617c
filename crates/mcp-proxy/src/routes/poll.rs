//! `GET /poll?session_id=X[&timeout=S]`: the long poll. 200 with one item (or a batch of
//! them, for a registration granted `poll_items`), or 204.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Deserialize;

use crate::auth::Grant;
use crate::broker::{Claimed, Delivery, Requester};
use crate::peer::ClientAddr;
use crate::state::AppState;
use crate::Error;

/// The poll's query.
#[derive(Debug, Deserialize)]
pub(crate) struct PollQuery {
    session_id: Option<String>,
    /// Whole seconds to hold; kept as text so a bad value is a clean `invalid_query`.
    timeout: Option<String>,
}

/// Holds the poll until an item arrives or the hold ends.
pub(crate) async fn poll(
    State(state): State<AppState>,
    grant: Option<Extension<Grant>>,
    address: Option<Extension<ClientAddr>>,
    query: Result<Query<PollQuery>, QueryRejection>,
) -> Result<Response, Error> {
    let Query(q) = query.map_err(|e| Error::InvalidQuery(e.body_text()))?;
    let id = q
        .session_id
        .ok_or_else(|| Error::InvalidQuery("missing session_id".into()))?;
    let requested = match q.timeout.as_deref() {
        None => None,
        Some(t) => Some(Duration::from_secs(t.parse::<u64>().map_err(|_| {
            Error::InvalidQuery("timeout must be a non-negative integer".into())
        })?)),
    };
    // With auth on, a legacy id is re-adopted only for a token that reaches the default pool.
    let (owner, may_adopt) = match grant {
        Some(Extension(g)) => (Some(g.id), g.names.allows("")),
        None => (None, true),
    };
    let who = Requester {
        token: owner,
        address: address.map(|Extension(ClientAddr(ip))| ip),
    };
    let mut delivery = match state.broker.open_delivery(&id, who, may_adopt) {
        // A poll during shutdown ends at once, empty, as its hold would.
        Err(Error::ShuttingDown) => return Ok(StatusCode::NO_CONTENT.into_response()),
        opened => opened?,
    };
    let hold = delivery.hold(requested);
    let Some(first) = delivery.next(hold).await? else {
        delivery.close(false);
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let body = if delivery.batch() <= 1 {
        // Serializing our own item cannot fail; if it somehow did, dropping `first` requeues.
        let body = serde_json::to_vec(first.item()).map_err(unserializable)?;
        // The hand-over: from here on the item is never queued again.
        first.deliver();
        body
    } else {
        batch(&mut delivery, first, state.config().max_body_bytes).await?
    };
    delivery.close(true);
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The bytes every batch answer starts with (the relay tells a batch from an item by them).
pub(crate) const BATCH_START: &[u8] = br#"{"items":["#;

/// `{"items":[…]}`: `first`, then whatever else is queued now, up to the registration's
/// `poll_items` and, past the first, within `limit` bytes; all handed over together.
async fn batch(delivery: &mut Delivery, first: Claimed, limit: usize) -> Result<Vec<u8>, Error> {
    let mut body = BATCH_START.to_vec();
    serde_json::to_writer(&mut body, first.item()).map_err(unserializable)?;
    let mut taken = vec![first];
    while taken.len() < delivery.batch() {
        let Some(next) = delivery.next(Duration::ZERO).await? else {
            break;
        };
        let item = serde_json::to_vec(next.item()).map_err(unserializable)?;
        if body.len() + item.len() + 3 > limit {
            // Dropped unanswered, `next` goes back to the head of its queue.
            break;
        }
        body.push(b',');
        body.extend_from_slice(&item);
        taken.push(next);
    }
    body.extend_from_slice(b"]}");
    // The hand-over of the whole batch: none of its items is ever queued again.
    for claimed in taken {
        claimed.deliver();
    }
    Ok(body)
}

fn unserializable(e: serde_json::Error) -> Error {
    Error::InvalidBody(format!("item not serializable: {e}"))
}
