//! `POST /response?session_id=X`: a final answer, an interim message or a session message.

use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::Extension;
use axum::Json;
use bytes::Bytes;
use mcp_protocol::wire::{ResponseEnvelope, ResponseStatus};

use super::{session_id, wire_body, SessionQuery};
use crate::auth::Grant;
use crate::state::AppState;
use crate::Error;

/// 200 `{"status":"ok"|"duplicate"|"ignored"}`, or a wire error.
pub(crate) async fn response(
    State(state): State<AppState>,
    grant: Option<Extension<Grant>>,
    query: Result<Query<SessionQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ResponseStatus>, Error> {
    let id = session_id(query)?;
    state
        .broker
        .check_owner(&id, grant.as_ref().map(|Extension(g)| &g.id))?;
    let body = wire_body(body, state.config().max_body_bytes)?;
    let envelope: ResponseEnvelope =
        serde_json::from_slice(&body).map_err(|e| Error::InvalidBody(e.to_string()))?;
    let status = state.broker.respond(&id, envelope)?;
    Ok(Json(ResponseStatus { status }))
}
