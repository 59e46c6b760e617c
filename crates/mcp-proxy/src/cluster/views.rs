//! What the cluster adds to the operators' views: `/healthz` names the instance that answered
//! and how many are alive, `/metrics` counts instances and relays, and `/servers` gathers
//! every instance's pools, each marked with its `home`. The routes themselves describe this
//! instance alone.

use std::fmt::Write as _;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::Cluster;
use crate::routes;
use crate::topology::Relayed;

/// How long the instance asked waits for the others' pools.
const GATHER_DEADLINE: Duration = Duration::from_secs(2);

/// The most bytes of a view this instance reads back to add to it (its own answer).
const VIEW_MAX: usize = 64 * 1024 * 1024;

impl Cluster {
    /// Serves an operator's view here, then adds the cluster's part to a successful answer.
    pub(super) async fn view(&self, req: Request, next: Next) -> Response {
        let pattern = routes::route_of(&req).map_or("", |r| r.pattern);
        let relayed = req.extensions().get::<Relayed>().is_some();
        let headers = req.headers().clone();
        let response = next.run(req).await;
        if !response.status().is_success() {
            return response;
        }
        let (mut parts, body) = response.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, VIEW_MAX).await else {
            return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        let body = match pattern {
            "/metrics" => {
                let mut text = String::from_utf8_lossy(&bytes).into_owned();
                self.render_metrics(&mut text);
                text.into_bytes()
            }
            "/healthz" => self.add_to_health(&bytes),
            "/servers" => self.all_servers(&bytes, relayed, &headers).await,
            _ => bytes.to_vec(),
        };
        // The length changed; hyper sets it again from the new body.
        parts.headers.remove(axum::http::header::CONTENT_LENGTH);
        Response::from_parts(parts, Body::from(body))
    }

    /// `/healthz` plus `"instance"` and `"instances"`.
    fn add_to_health(&self, bytes: &[u8]) -> Vec<u8> {
        let Ok(mut body) = serde_json::from_slice::<Value>(bytes) else {
            return bytes.to_vec();
        };
        body["instance"] = json!(self.instance_id());
        body["instances"] = json!(self.instances().len());
        body.to_string().into_bytes()
    }

    /// `/servers` with each pool's `home`; asked directly (not relayed), every other live
    /// instance's pools too, the default pool first, then by name, as on a single instance.
    async fn all_servers(&self, bytes: &[u8], relayed: bool, headers: &HeaderMap) -> Vec<u8> {
        let Ok(mut body) = serde_json::from_slice::<Value>(bytes) else {
            return bytes.to_vec();
        };
        let mut pools = match body.get_mut("pools").map(Value::take) {
            Some(Value::Array(pools)) => pools,
            _ => Vec::new(),
        };
        for pool in &mut pools {
            pool["home"] = json!(self.instance_id());
        }
        if !relayed {
            for answer in self.gather("/servers", headers, GATHER_DEADLINE).await {
                if let Some(Value::Array(more)) = answer.get("pools") {
                    pools.extend(more.iter().cloned());
                }
            }
            pools.sort_by(|a, b| {
                let key = |p: &Value| p["name"].as_str().map(str::to_owned);
                key(a).cmp(&key(b))
            });
        }
        body["pools"] = Value::Array(pools);
        body.to_string().into_bytes()
    }

    /// The cluster's lines of `/metrics`: live instances and relays.
    fn render_metrics(&self, out: &mut String) {
        let (relayed_out, relayed_in, failed) = self.relay_counts();
        let _ = writeln!(out, "# HELP mcp_proxy_cluster_instances Proxy instances alive in the cluster, this one included.");
        let _ = writeln!(out, "# TYPE mcp_proxy_cluster_instances gauge");
        let _ = writeln!(
            out,
            "mcp_proxy_cluster_instances {}",
            self.instances().len()
        );
        let _ = writeln!(out, "# HELP mcp_proxy_relayed_total Requests relayed between instances: to the pool's home (out) or served for another instance (in).");
        let _ = writeln!(out, "# TYPE mcp_proxy_relayed_total counter");
        let _ = writeln!(
            out,
            "mcp_proxy_relayed_total{{direction=\"out\"}} {relayed_out}"
        );
        let _ = writeln!(
            out,
            "mcp_proxy_relayed_total{{direction=\"in\"}} {relayed_in}"
        );
        let _ = writeln!(out, "# HELP mcp_proxy_relays_failed_total Relays that failed because an instance or Redis was lost.");
        let _ = writeln!(out, "# TYPE mcp_proxy_relays_failed_total counter");
        let _ = writeln!(out, "mcp_proxy_relays_failed_total {failed}");
    }
}
