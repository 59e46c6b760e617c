//! `GET /poll?session_id=X[&timeout=S]`: the long poll. 200 with one item, or 204.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Deserialize;

use crate::auth::Grant;
use crate::broker::Requester;
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
    let Some(claimed) = state
        .broker
        .poll_as(
            &id,
            requested,
            Requester {
                token: owner,
                address: address.map(|Extension(ClientAddr(ip))| ip),
            },
            may_adopt,
        )
        .await?
    else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    // Serializing our own item cannot fail; if it somehow did, dropping `claimed` requeues.
    let body = serde_json::to_vec(claimed.item())
        .map_err(|e| Error::InvalidBody(format!("item not serializable: {e}")))?;
    // The hand-over: from here on the item is never queued again.
    claimed.deliver();
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}
