//! `GET /healthz`: the proxy is up; how many registrations and pending requests it has. No
//! auth, no session detail.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::state::AppState;

/// `200 {"status":"ok","registrations":N,"pending":N}`.
pub(crate) async fn healthz(State(state): State<AppState>) -> Json<Value> {
    // Two map sizes, never a walk: anyone may call this as often as they like.
    let (registrations, pending) = state.broker.counts();
    Json(json!({
        "status": "ok",
        "registrations": registrations,
        "pending": pending,
    }))
}
