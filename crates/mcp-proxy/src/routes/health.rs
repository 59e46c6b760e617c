//! `GET /healthz`: the proxy is up; how many registrations and pending requests it has, and
//! in a cluster which instance answered and how many are alive. No auth, no session detail.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::AppState;

/// `200 {"status":"ok","registrations":N,"pending":N}`, plus `"instance"` and `"instances"`
/// in a cluster.
pub(crate) async fn healthz(State(state): State<AppState>) -> Json<Value> {
    // Two map sizes, never a walk: anyone may call this as often as they like.
    let (registrations, pending) = state.broker.counts();
    let mut body = json!({
        "status": "ok",
        "registrations": registrations,
        "pending": pending,
    });
    if let Some(cluster) = &state.cluster {
        body["instance"] = json!(cluster.instance_id());
        body["instances"] = json!(cluster.instances().len());
    }
    Json(body)
}
