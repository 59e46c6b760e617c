//! `GET /servers`: the pools, their members, outstanding requests and age, as JSON for
//! operators' scripts. Members are labelled by an ordinal, never by their session id. In a
//! cluster, the instance asked gathers every instance's pools, each marked with its `home`.

use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::{Extension, Json};
use serde_json::{json, Value};

use crate::cluster::Relayed;
use crate::AppState;

/// How long the instance asked waits for the others' pools.
const GATHER_DEADLINE: Duration = Duration::from_secs(2);

/// `200 {"pools":[...]}`, default pool first, then by name.
pub(crate) async fn servers(
    State(state): State<AppState>,
    relayed: Option<Extension<Relayed>>,
    headers: HeaderMap,
) -> Json<Value> {
    let Some(cluster) = &state.cluster else {
        return Json(json!({"pools": state.broker.servers()}));
    };
    let mut pools: Vec<Value> = state
        .broker
        .servers()
        .into_iter()
        .map(|pool| {
            let mut pool = json!(pool);
            pool["home"] = json!(cluster.instance_id());
            pool
        })
        .collect();
    if relayed.is_none() {
        for answer in cluster.gather("/servers", &headers, GATHER_DEADLINE).await {
            if let Some(Value::Array(more)) = answer.get("pools") {
                pools.extend(more.iter().cloned());
            }
        }
        // The default pool (`null`) first, then by name, as on a single instance.
        pools.sort_by(|a, b| {
            let key = |p: &Value| p["name"].as_str().map(str::to_owned);
            key(a).cmp(&key(b))
        });
    }
    Json(json!({ "pools": pools }))
}
