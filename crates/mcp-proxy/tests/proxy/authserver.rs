//! The built-in authorization server end to end over real HTTP: its metadata, dynamic
//! registration, login and consent by form posts, codes for tokens, tokens that open their
//! own pool only (the server learns who calls), refresh rotation and reuse, revocation, and
//! state that survives a restart.

use serde_json::{json, Value};

use super::authflow::{self, http, token, tokens_for};
use super::common::{client, Proxy};
use super::fake::FakeServer;
use super::oauth::{call, served};

fn resource(proxy: &Proxy, pool: &str) -> String {
    proxy.url(&format!("/servers/{pool}/mcp"))
}

async fn get_json(url: &str) -> Value {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn metadata_announces_the_built_in_server_everywhere() {
    let proxy = authflow::start(None, |_| {}).await;
    let issuer = proxy.url("");
    let meta = get_json(&proxy.url("/.well-known/oauth-authorization-server")).await;
    assert_eq!(meta["issuer"], issuer);
    assert_eq!(
        meta["authorization_endpoint"],
        proxy.url("/oauth/authorize")
    );
    assert_eq!(meta["token_endpoint"], proxy.url("/oauth/token"));
    assert_eq!(meta["registration_endpoint"], proxy.url("/oauth/register"));
    assert_eq!(meta["revocation_endpoint"], proxy.url("/oauth/revoke"));
    assert_eq!(meta["jwks_uri"], proxy.url("/oauth/jwks"));
    assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(meta["response_types_supported"], json!(["code"]));
    assert_eq!(meta["client_id_metadata_document_supported"], true);
    assert_eq!(meta["authorization_response_iss_parameter_supported"], true);
    assert!(meta["token_endpoint_auth_methods_supported"]
        .as_array()
        .unwrap()
        .contains(&json!("none")));
    assert_eq!(
        meta["grant_types_supported"],
        json!(["authorization_code", "refresh_token"])
    );
    // Every pool's resource metadata names it.
    for path in ["/mcp", "/servers/alpha/mcp"] {
        let prm =
            get_json(&proxy.url(&format!("/.well-known/oauth-protected-resource{path}"))).await;
        assert_eq!(prm["authorization_servers"], json!([issuer]), "{path}");
        assert_eq!(prm["resource"], proxy.url(path));
    }
    let jwks = get_json(&proxy.url("/oauth/jwks")).await;
    let key = &jwks["keys"][0];
    assert_eq!(
        (
            key["kty"].as_str(),
            key["crv"].as_str(),
            key["alg"].as_str()
        ),
        (Some("EC"), Some("P-256"), Some("ES256"))
    );
    assert!(key.get("d").is_none());
    // The 401 of a pool points at it.
    let (status, challenge, _) = call(&proxy, "/servers/alpha/mcp", None).await;
    assert_eq!(status, 401);
    assert!(challenge.unwrap().contains(&format!(
        "{issuer}/.well-known/oauth-protected-resource/servers/alpha/mcp"
    )));
    proxy.stop().await;
}

#[tokio::test]
async fn a_client_signs_in_calls_its_pool_only_and_refreshes_with_rotation() {
    let proxy = authflow::start(None, |_| {}).await;
    let server = FakeServer::register(&proxy, Some("alpha"), &["2025-11-25"]).await;
    let (client_id, tokens) = tokens_for(&proxy, &resource(&proxy, "alpha")).await;
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["scope"], "mcp:tools");
    assert!(tokens["expires_in"].as_u64().unwrap() <= 600);
    let access = tokens["access_token"].as_str().unwrap();
    let item = served(&proxy, &server, "/servers/alpha/message", access).await;
    assert_eq!(
        item["identity"],
        json!({"issuer": proxy.url(""), "subject": "owner", "client_id": client_id, "scopes": ["mcp:tools"]})
    );
    // Another pool, and the default pool, refuse it.
    for path in ["/servers/beta/mcp", "/mcp", "/servers/beta/message"] {
        let (status, challenge, _) = call(&proxy, path, Some(access)).await;
        assert_eq!(status, 401, "{path}");
        assert!(challenge.unwrap().contains("another resource"));
    }

    // Refresh: a new pair, the old refresh token retired.
    let first = tokens["refresh_token"].as_str().unwrap().to_owned();
    let (status, renewed) = token(
        &proxy,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &client_id),
            ("refresh_token", &first),
        ],
    )
    .await;
    assert_eq!(status, 200, "{renewed}");
    let second = renewed["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    let renewed_access = renewed["access_token"].as_str().unwrap().to_owned();
    served(&proxy, &server, "/servers/alpha/message", &renewed_access).await;
    // A refresh may narrow the scopes, never widen them.
    let (status, body) = token(
        &proxy,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &client_id),
            ("refresh_token", &second),
            ("scope", "mcp:tools admin"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope"))
    );
    // A refused request does not use the token up: it still refreshes.
    let (status, body) = token(
        &proxy,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &client_id),
            ("refresh_token", &second),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let third = body["refresh_token"].as_str().unwrap().to_owned();

    // The retired token used again: the whole family is revoked, its access tokens too.
    let (status, body) = token(
        &proxy,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &client_id),
            ("refresh_token", &first),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, body) = token(
        &proxy,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &client_id),
            ("refresh_token", &second),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "the family is gone"
    );
    let (status, body) = token(
        &proxy,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &client_id),
            ("refresh_token", &third),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "the family is gone, its newest token too"
    );
    let (status, challenge, _) =
        call(&proxy, "/servers/alpha/message", Some(&renewed_access)).await;
    assert_eq!(status, 401);
    assert!(challenge.unwrap().contains("revoked"));
    server.leave().await;
    proxy.stop().await;
}

#[tokio::test]
async fn revocation_of_a_refresh_token_or_an_access_token() {
    let proxy = authflow::start(None, |_| {}).await;
    let server = FakeServer::register(&proxy, Some("alpha"), &["2025-11-25"]).await;
    let revoke = |client_id: String, token: String| {
        let url = proxy.url("/oauth/revoke");
        async move {
            http()
                .post(url)
                .form(&[("client_id", client_id.as_str()), ("token", token.as_str())])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let (client_id, tokens) = tokens_for(&proxy, &resource(&proxy, "alpha")).await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    served(&proxy, &server, "/servers/alpha/message", &access).await;
    // Another client cannot revoke it; an unknown token is a 200 all the same.
    let (other, _) = tokens_for(&proxy, &resource(&proxy, "alpha")).await;
    assert_eq!(revoke(other.clone(), refresh.clone()).await, 200);
    assert_eq!(revoke(other, "no-such-token".into()).await, 200);
    served(&proxy, &server, "/servers/alpha/message", &access).await;
    // Its own client revokes the refresh token: the family goes, access token included.
    assert_eq!(revoke(client_id.clone(), refresh.clone()).await, 200);
    let (status, _) = token(
        &proxy,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &client_id),
            ("refresh_token", &refresh),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        call(&proxy, "/servers/alpha/message", Some(&access))
            .await
            .0,
        401
    );

    // One access token alone.
    let (client_id, tokens) = tokens_for(&proxy, &resource(&proxy, "alpha")).await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    served(&proxy, &server, "/servers/alpha/message", &access).await;
    assert_eq!(revoke(client_id.clone(), access.clone()).await, 200);
    assert_eq!(
        call(&proxy, "/servers/alpha/message", Some(&access))
            .await
            .0,
        401
    );
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let (status, _) = token(
        &proxy,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &client_id),
            ("refresh_token", refresh),
        ],
    )
    .await;
    assert_eq!(status, 200, "the refresh token lives on");
    server.leave().await;
    proxy.stop().await;
}

#[tokio::test]
async fn clients_tokens_and_keys_survive_a_restart() {
    let dir = std::env::temp_dir().join(format!("mcp-proxy-as-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.json");
    let _ = std::fs::remove_file(&path);
    let proxy = authflow::start(Some(&path), |_| {}).await;
    let addr = proxy.addr;
    let (client_id, tokens) = tokens_for(&proxy, &resource(&proxy, "alpha")).await;
    proxy.stop().await;

    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let proxy = authflow::start_on(listener, Some(&path), |_| {});
    let server = FakeServer::register(&proxy, Some("alpha"), &["2025-11-25"]).await;
    // The access token still verifies (same keys), the refresh token still rotates (same
    // family), the client is still registered.
    let access = tokens["access_token"].as_str().unwrap();
    served(&proxy, &server, "/servers/alpha/message", access).await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let (status, renewed) = token(
        &proxy,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &client_id),
            ("refresh_token", refresh),
        ],
    )
    .await;
    assert_eq!(status, 200, "{renewed}");
    served(
        &proxy,
        &server,
        "/servers/alpha/message",
        renewed["access_token"].as_str().unwrap(),
    )
    .await;
    server.leave().await;
    proxy.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
