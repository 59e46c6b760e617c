//! `GET /healthz`: the proxy is up; how many registrations it has. No auth, no session detail.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::AppState;

/// `200 {"status":"ok","registrations":N}`.
pub(crate) async fn healthz(State(state): State<AppState>) -> Json<Value> {
    let stats = state.broker.stats();
    Json(json!({"status": "ok", "registrations": stats.registrations}))
}
