//! OAuth through the whole tunnel: a real MCP client with an access token from a test
//! identity provider, the real proxy as the resource server, a real reverse client and
//! `mcp-server`, whose tool learns who calls (`RequestContext::identity`), never the token.

use std::sync::Arc;

use mcp_client::{text_of, Client, ClientOptions, Error as ClientError};
use mcp_proxy::auth::oauth::{OAuth, OAuthConfig};
use mcp_reverse::{Configuration, ReverseClient};
use mcp_server::{demo, Server, ServerConfig};
use serde_json::{json, Value};

use crate::common::Proxy;
use crate::issuer::Issuer;

/// A client of `url` sending `token`.
fn with_token(url: &str, token: Option<String>) -> Client {
    Client::with_options(
        url,
        ClientOptions {
            token,
            ..ClientOptions::default()
        },
    )
    .unwrap()
}

#[tokio::test]
async fn a_tool_learns_the_callers_identity_end_to_end() {
    let issuer = Issuer::start().await;
    let proxy = Proxy::start_with(|config, url| {
        let mut oauth = OAuthConfig::new(url, &issuer.url()).unwrap();
        oauth.add_scopes("mcp:tools").unwrap();
        config.oauth = Some(Arc::new(OAuth::new(oauth)));
    })
    .await;
    let server = Server::new(ServerConfig::new("oauth-tunnel", "1.0.0"));
    demo::register_seed_tools(&server, true);
    let mut config = Configuration::new(&proxy.url).with_held_polls(2);
    config.server_name = Some("alpha".into());
    let reverse = ReverseClient::new(server, config).unwrap().spawn();
    proxy.wait_registrations(1).await;

    let resource = format!("{}/servers/alpha/mcp", proxy.url);
    let token = issuer.token("alice", &resource, "mcp:tools extra");
    // Streamable HTTP (with a session) and the seed's /message route alike.
    for url in [
        resource.clone(),
        format!("{}/servers/alpha/message", proxy.url),
    ] {
        let client = with_token(&url, Some(token.clone()));
        client.initialize().await.unwrap();
        let result = client.call_tool("whoami", json!({})).await.unwrap();
        let who: Value = serde_json::from_str(&text_of(&result)).unwrap();
        assert_eq!(
            who,
            json!({"issuer": issuer.url(), "subject": "alice",
                "client_id": "tunnel-test-client", "scopes": ["mcp:tools", "extra"]}),
            "{url}"
        );
        assert!(!text_of(&result).contains(&token));
    }

    // No token, or a token for another pool's resource: refused before the server.
    let beta = issuer.token(
        "alice",
        &format!("{}/servers/beta/mcp", proxy.url),
        "mcp:tools",
    );
    for token in [None, Some(beta)] {
        let refused = with_token(&resource, token).initialize().await;
        assert!(
            matches!(refused, Err(ClientError::Status { status: 401, .. })),
            "{refused:?}"
        );
    }
    reverse.shutdown().await.unwrap();
    proxy.stop().await;
}
