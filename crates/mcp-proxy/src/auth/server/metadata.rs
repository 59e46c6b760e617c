//! The authorization server's metadata (RFC 8414) at
//! `/.well-known/oauth-authorization-server`, and its key set at `/oauth/jwks`: public,
//! with CORS for any origin (browser clients read them too); 404 while it does not run.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::clients::state_error;
use super::AuthServer;
use crate::state::AppState;

impl AuthServer {
    /// The metadata document: `issuer` is exactly the URL it is served under.
    pub(crate) fn metadata(&self) -> Value {
        let mut scopes: Vec<String> = Vec::new();
        for s in self
            .resources
            .scopes
            .values()
            .flatten()
            .chain(self.resources.tool_scopes.values().flatten())
        {
            if !scopes.contains(s) {
                scopes.push(s.clone());
            }
        }
        json!({
            "issuer": self.issuer(),
            "authorization_endpoint": self.endpoint("/oauth/authorize"),
            "token_endpoint": self.endpoint("/oauth/token"),
            "registration_endpoint": self.endpoint("/oauth/register"),
            "revocation_endpoint": self.endpoint("/oauth/revoke"),
            "jwks_uri": self.endpoint("/oauth/jwks"),
            "scopes_supported": scopes,
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none", "client_secret_post", "client_secret_basic"],
            "revocation_endpoint_auth_methods_supported": ["none", "client_secret_post", "client_secret_basic"],
            "client_id_metadata_document_supported": true,
            "authorization_response_iss_parameter_supported": true,
        })
    }
}

/// `GET /.well-known/oauth-authorization-server`.
pub(crate) async fn metadata(State(state): State<AppState>) -> Response {
    let Some(server) = super::of(&state) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(server.metadata()),
    )
        .into_response()
}

/// `GET /oauth/jwks`.
pub(crate) async fn jwks(State(state): State<AppState>) -> Response {
    let Some(server) = super::of(&state) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match server.keys.jwks().await {
        // Short: a client caching it sees a new key soon after a rotation.
        Ok(set) => ([(header::CACHE_CONTROL, "public, max-age=300")], Json(set)).into_response(),
        Err(e) => state_error(e),
    }
}
