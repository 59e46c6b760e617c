//! One file per route; shared extraction helpers here.

pub(crate) mod health;
pub(crate) mod mcp;
pub(crate) mod message;
pub(crate) mod poll;
pub(crate) mod register;
pub(crate) mod response;
pub(crate) mod servers;

use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::Query;
use axum::http::StatusCode;
use bytes::Bytes;
use serde::Deserialize;

use crate::auth::Grant;
use crate::broker::Requester;
use crate::peer::ClientAddr;
use crate::Error;

/// Who calls, for the quotas: the token the auth layer granted and the address the
/// listener resolved.
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Requester {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Requester {
            token: parts.extensions.get::<Grant>().map(|g| g.id),
            address: parts.extensions.get::<ClientAddr>().map(|a| a.0),
        })
    }
}

/// `?session_id=X`, the query of every reverse-client route but `/register`'s POST.
#[derive(Debug, Deserialize)]
pub(crate) struct SessionQuery {
    /// The registration's session id (never logged whole).
    pub(crate) session_id: Option<String>,
}

/// The session id from a reverse-client query, or 400 `invalid_query`.
pub(crate) fn session_id(
    query: Result<Query<SessionQuery>, QueryRejection>,
) -> Result<String, Error> {
    let Query(q) = query.map_err(|e| Error::InvalidQuery(e.body_text()))?;
    q.session_id
        .ok_or_else(|| Error::InvalidQuery("missing session_id".into()))
}

/// A reverse-client body, or 413 `payload_too_large` / 400 `invalid_body`.
pub(crate) fn wire_body(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, Error> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::BodyTooLarge { limit }
        } else {
            Error::InvalidBody(e.body_text())
        }
    })
}
