//! `POST /response?session_id=X`: a final answer, an interim message or a session message, or
//! several of them at once (docs/protocol.md, "Several answers per post").

use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use bytes::Bytes;
use mcp_protocol::wire::{
    AnswerBatch, AnswerOutcome, AnswerOutcomes, ResponseEnvelope, ResponseStatus,
};

use super::{session_id, wire_body, SessionQuery};
use crate::auth::Grant;
use crate::broker::Broker;
use crate::state::AppState;
use crate::Error;

/// 200 `{"status":"ok"|"duplicate"|"ignored"}`, 200 `{"results":[...]}` for several bodies,
/// or a wire error.
pub(crate) async fn response(
    State(state): State<AppState>,
    grant: Option<Extension<Grant>>,
    query: Result<Query<SessionQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let id = session_id(query)?;
    state
        .broker
        .check_owner(&id, grant.as_ref().map(|Extension(g)| &g.id))?;
    let body = wire_body(body, state.config().max_body_bytes)?;
    // One body is the common case and the seed's: read as one first.
    let not_one = match serde_json::from_slice::<ResponseEnvelope>(&body) {
        Ok(envelope) => {
            let status = state.broker.respond(&id, envelope)?;
            return Ok(Json(ResponseStatus { status }).into_response());
        }
        Err(e) => e,
    };
    let Ok(batch) = serde_json::from_slice::<AnswerBatch>(&body) else {
        return Err(Error::InvalidBody(not_one.to_string()));
    };
    let allowed = state.broker.answers_per_post(&id)?;
    if allowed < 2 {
        return Err(Error::InvalidBody(
            "several answers in one post need a registration granted poll_items above 1".into(),
        ));
    }
    if batch.answers.is_empty() || batch.answers.len() > allowed {
        return Err(Error::InvalidBody(format!(
            "\"answers\" holds 1 to {allowed} entries (the poll_items granted)"
        )));
    }
    Ok(Json(take_all(&state.broker, &id, batch)?).into_response())
}

/// Takes every entry as if it had been posted alone; only a registration that is gone ends the
/// post (the entries before it were taken, and the client registers again anyway).
fn take_all(broker: &Broker, id: &str, batch: AnswerBatch) -> Result<AnswerOutcomes, Error> {
    let mut results = Vec::with_capacity(batch.answers.len());
    for raw in batch.answers {
        let outcome = match serde_json::from_str::<ResponseEnvelope>(raw.get()) {
            Err(e) => Error::InvalidBody(e.to_string()).to_wire_error().into(),
            Ok(envelope) => match broker.respond(id, envelope) {
                Ok(status) => AnswerOutcome::Status(ResponseStatus { status }),
                Err(Error::UnknownSession) => return Err(Error::UnknownSession),
                Err(e) => e.to_wire_error().into(),
            },
        };
        results.push(outcome);
    }
    Ok(AnswerOutcomes { results })
}
