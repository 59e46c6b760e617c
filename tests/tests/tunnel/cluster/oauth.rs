//! OAuth across instances: an access token is checked wherever it arrives (and again by the
//! pool's home), is refused on another pool whichever instance it reaches, and a client
//! session stays its opener's, also after another instance took it over.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_client::{text_of, Client, ClientOptions, Error as ClientError};
use mcp_proxy::auth::oauth::{OAuth, OAuthConfig};
use mcp_proxy::Config;
use mcp_reverse::{ReverseClient, ReverseHandle};
use mcp_server::{demo, Server, ServerConfig};
use serde_json::{json, Value};

use super::{register, Node, Redis};
use crate::common::DEADLINE;
use crate::issuer::Issuer;

/// The public URL every instance is given (what a balancer in front would serve; nothing
/// fetches it, it names the pools' resources).
const PUBLIC: &str = "https://mcp.example.com";

fn oauth(issuer: &Issuer) -> impl Fn(&mut Config) + '_ {
    move |c: &mut Config| {
        let mut oauth = OAuthConfig::new(PUBLIC, &issuer.url()).unwrap();
        oauth.add_scopes("mcp:tools").unwrap();
        c.oauth = Some(Arc::new(OAuth::new(oauth)));
    }
}

fn resource(pool: &str) -> String {
    format!("{PUBLIC}/servers/{pool}/mcp")
}

/// A reverse client serving the demo tools (whoami included) as pool `name` through `url`.
fn serve_pool(url: &str, name: &str) -> ReverseHandle {
    let server = Server::new(ServerConfig::new("cluster-oauth", "1.0.0"));
    demo::register_seed_tools(&server, true);
    let mut config = mcp_reverse::Configuration::new(url).with_held_polls(2);
    config.server_name = Some(name.into());
    config.retry_delay_seconds = 1;
    config.shutdown_grace = Duration::from_secs(2);
    ReverseClient::new(server, config).unwrap().spawn()
}

fn client_of(url: &str, token: &str) -> Client {
    Client::with_options(
        url,
        ClientOptions {
            token: Some(token.to_owned()),
            ..ClientOptions::default()
        },
    )
    .unwrap()
}

/// The subject `whoami` reports through `url` with `token`, once the pool is served.
async fn whoami(url: &str, token: &str) -> Value {
    let start = Instant::now();
    loop {
        let client = client_of(url, token);
        let called = match client.initialize().await {
            Ok(_) => client.call_tool("whoami", json!({})).await,
            Err(e) => Err(e),
        };
        match called {
            Ok(result) => {
                let who: Value = serde_json::from_str(&text_of(&result)).unwrap();
                return who["subject"].clone();
            }
            Err(e) => assert!(start.elapsed() < DEADLINE, "whoami never answered: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `tools/call` of echo on `session` through `url` with `token`: its status.
async fn echo_on(url: &str, session: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .header("mcp-session-id", session)
        .header("mcp-protocol-version", "2025-11-25")
        .header("accept", "application/json")
        .json(&json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                      "params": {"name": "echo", "arguments": {"text": "x"}}}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_token_works_through_either_instance_and_never_on_another_pool() {
    let redis = Redis::start();
    let issuer = Issuer::start().await;
    let a = Node::start_with(&redis, oauth(&issuer)).await;
    let b = Node::start_with(&redis, oauth(&issuer)).await;
    let alpha_server = serve_pool(&a.url, "alpha");
    let beta_server = serve_pool(&a.url, "beta");
    let token = issuer.token("alice", &resource("alpha"), "mcp:tools");
    for node in [&a, &b] {
        let url = format!("{}/servers/alpha/mcp", node.url);
        assert_eq!(whoami(&url, &token).await, "alice", "through {}", node.url);
    }
    // Beta is served (its own token works through B), and alpha's token is refused there,
    // whichever instance it reaches.
    let beta_token = issuer.token("alice", &resource("beta"), "mcp:tools");
    assert_eq!(
        whoami(&format!("{}/servers/beta/mcp", b.url), &beta_token).await,
        "alice"
    );
    for node in [&b, &a] {
        for route in ["mcp", "message"] {
            let url = format!("{}/servers/beta/{route}", node.url);
            let refused = client_of(&url, &token).initialize().await;
            assert!(
                matches!(refused, Err(ClientError::Status { status: 401, .. })),
                "{url}: {refused:?}"
            );
        }
    }
    alpha_server.shutdown().await.unwrap();
    beta_server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_client_session_stays_its_openers_when_another_instance_takes_it_over() {
    let redis = Redis::start();
    let issuer = Issuer::start().await;
    let a = Node::start_with(&redis, oauth(&issuer)).await;
    let b = Node::start_with(&redis, oauth(&issuer)).await;
    let c = Node::start_with(&redis, oauth(&issuer)).await;
    // A is alpha's home; its server and its client talk to B only.
    let claim = register(
        &a,
        json!({"type": "mcp_server", "name": "alpha", "capabilities": {}}),
    )
    .await;
    let left = reqwest::Client::new()
        .delete(format!("{}/register?session_id={claim}", a.url))
        .send()
        .await
        .unwrap();
    assert_eq!(left.status(), 204);
    let reverse = serve_pool(&b.url, "alpha");
    let alice = issuer.token("alice", &resource("alpha"), "mcp:tools");
    let bob = issuer.token("bob", &resource("alpha"), "mcp:tools");
    let b_alpha = format!("{}/servers/alpha/mcp", b.url);
    let c_alpha = format!("{}/servers/alpha/mcp", c.url);
    assert_eq!(whoami(&b_alpha, &alice).await, "alice");
    let session = client_of(&b_alpha, &alice);
    session.initialize().await.unwrap();
    let id = session.session_id().expect("a session");

    // Bob, with a valid token for alpha, cannot use it through another instance.
    assert_eq!(echo_on(&c_alpha, &id, &bob).await, 404);
    assert_eq!(echo_on(&c_alpha, &id, &alice).await, 200);

    a.kill().await;
    let start = Instant::now();
    loop {
        match session.call_tool("echo", json!({"text": "after"})).await {
            Ok(_) => break,
            Err(ClientError::SessionExpired) => panic!("the session was lost with its home"),
            Err(e) => assert!(start.elapsed() < DEADLINE, "never recovered: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Taken over by B with its owner: still Alice's only.
    assert_eq!(echo_on(&c_alpha, &id, &bob).await, 404);
    assert_eq!(echo_on(&c_alpha, &id, &alice).await, 200);
    reverse.shutdown().await.unwrap();
}
