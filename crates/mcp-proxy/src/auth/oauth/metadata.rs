//! Protected resource metadata (RFC 9728) of each pool, at
//! `/.well-known/oauth-protected-resource` + the pool's path: where MCP clients learn which
//! authorization server to ask, for which resource, with which scopes. Public (no token),
//! with CORS for any origin; 404 while OAuth is off.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mcp_protocol::wire::is_valid_pool_name;
use serde_json::json;

use crate::state::AppState;

/// `GET /.well-known/oauth-protected-resource/mcp`: the default pool's.
pub(crate) async fn default_pool(State(state): State<AppState>) -> Response {
    metadata(&state, "")
}

/// `GET /.well-known/oauth-protected-resource/servers/{name}/mcp`: pool `name`'s.
pub(crate) async fn named_pool(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Response {
    if !is_valid_pool_name(&name) {
        return StatusCode::NOT_FOUND.into_response();
    }
    metadata(&state, &name)
}

fn metadata(state: &AppState, pool: &str) -> Response {
    let Some(oauth) = &state.config().oauth else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let config = oauth.config();
    let body = json!({
        "resource": config.resource(pool),
        "authorization_servers": [config.issuer],
        "scopes_supported": config.scopes_supported(pool),
        "bearer_methods_supported": ["header"],
        "resource_name": if pool.is_empty() { "MCP server".to_owned() } else { format!("MCP server {pool}") },
    });
    ([(header::CACHE_CONTROL, "public, max-age=300")], Json(body)).into_response()
}
