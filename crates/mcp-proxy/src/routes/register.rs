//! `POST /register` (join a pool, get a session id) and `DELETE /register` (leave cleanly).

use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Extension;
use axum::Json;
use bytes::Bytes;
use mcp_protocol::wire::{
    granted_poll_items, RegisterRequest, RegisterResponse, POLL_PATH, RESPONSE_PATH, SERVER_TYPE,
};

use super::{session_id, wire_body, SessionQuery};
use crate::auth::Grant;
use crate::broker::Requester;
use crate::peer::ClientAddr;
use crate::state::AppState;
use crate::Error;

/// Registers a server; a body without `capabilities` (the seed's) makes a legacy registration.
/// An empty body is taken as the seed's.
pub(crate) async fn register(
    State(state): State<AppState>,
    grant: Option<Extension<Grant>>,
    address: Option<Extension<ClientAddr>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RegisterResponse>, Error> {
    let body = wire_body(body, state.config().max_body_bytes)?;
    let req: RegisterRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RegisterRequest::legacy(0)
    } else {
        serde_json::from_slice(&body).map_err(|e| Error::InvalidBody(e.to_string()))?
    };
    if req.kind != SERVER_TYPE {
        return Err(Error::InvalidBody(format!(
            "\"type\" must be \"{SERVER_TYPE}\""
        )));
    }
    // A server token reaches only its pools: no one joins `alpha` with `beta`'s token.
    if let Some(Extension(grant)) = &grant {
        let pool = req.name.as_deref().unwrap_or_default();
        if !grant.names.allows(pool) {
            tracing::info!(token = %grant.id.fingerprint(), pool, "refused: server token not bound to this pool");
            return Err(Error::ServerUnauthorized);
        }
    }
    let owner = grant.map(|Extension(g)| g.id);
    let who = Requester {
        token: owner,
        address: address.map(|Extension(ClientAddr(ip))| ip),
    };
    let session_id = state.broker.register_as(&req, who)?;
    let poll_items = req
        .capabilities
        .as_ref()
        .map(|c| granted_poll_items(c.poll_items))
        .filter(|&n| n > 1);
    Ok(Json(RegisterResponse {
        session_id,
        poll_endpoint: POLL_PATH.to_owned(),
        response_endpoint: RESPONSE_PATH.to_owned(),
        poll_items,
    }))
}

/// Deregisters: pending requests fail at once (502), held polls end with 404. 204.
pub(crate) async fn deregister(
    State(state): State<AppState>,
    grant: Option<Extension<Grant>>,
    query: Result<Query<SessionQuery>, QueryRejection>,
) -> Result<StatusCode, Error> {
    let id = session_id(query)?;
    state
        .broker
        .check_owner(&id, grant.as_ref().map(|Extension(g)| &g.id))?;
    state.broker.deregister(&id)?;
    Ok(StatusCode::NO_CONTENT)
}
