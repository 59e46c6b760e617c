//! `GET /servers`: the pools, their members, outstanding requests and age, as JSON for
//! operators' scripts. Members are labelled by an ordinal, never by their session id.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::state::AppState;

/// `200 {"pools":[...]}`, default pool first, then by name.
pub(crate) async fn servers(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"pools": state.broker.servers()}))
}
