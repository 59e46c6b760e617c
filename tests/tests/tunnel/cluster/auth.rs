//! Tokens across instances: checked by the home whichever instance relays, kept by a
//! registration taken over, and never a way to change the cluster for a pool they do not
//! reach.

use std::time::{Duration, Instant};

use mcp_client::{text_of, Client, ClientOptions, Error as ClientError};
use mcp_proxy::auth::{Auth, TokenKind, TokenSet};
use mcp_proxy::Config;
use mcp_reverse::ReverseClient;
use mcp_server::{demo, Server, ServerConfig};
use serde_json::{json, Value};

use super::{post, Node, Redis};
use crate::common::DEADLINE;

#[tokio::test]
async fn tokens_are_checked_by_the_home_whichever_instance_relays() {
    const SERVER: &str = "cluster-server-token-0123456789";
    const CLIENT: &str = "cluster-client-token-0123456789";
    let redis = Redis::start();
    let tokens = |c: &mut Config| {
        let mut set = TokenSet::new();
        set.add_spec(TokenKind::Server, &format!("{SERVER}:alpha"), "test")
            .unwrap();
        set.add_spec(TokenKind::Client, &format!("{CLIENT}:alpha"), "test")
            .unwrap();
        c.auth = Auth::with_tokens(set);
    };
    let a = Node::start_with(&redis, tokens).await;
    let b = Node::start_with(&redis, tokens).await;
    let server = Server::new(ServerConfig::new("cluster-test", "1.0.0"));
    demo::register_seed_tools(&server, false);
    let mut config = mcp_reverse::Configuration::new(&a.url)
        .with_held_polls(2)
        .with_token(SERVER);
    config.server_name = Some("alpha".into());
    let reverse = ReverseClient::new(server, config).unwrap().spawn();

    let alpha = format!("{}/servers/alpha/message", b.url);
    let with_token = ClientOptions {
        token: Some(CLIENT.into()),
        ..ClientOptions::default()
    };
    let start = Instant::now();
    let answer = loop {
        let client = Client::with_options(&alpha, with_token.clone()).unwrap();
        match client
            .call_tool("echo", json!({"text": "authorized"}))
            .await
        {
            Ok(result) => break text_of(&result),
            Err(e) => assert!(start.elapsed() < DEADLINE, "never answered: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(answer, "authorized");

    // Relayed from B to the pool's home A, and refused there like on a single instance.
    let refused = Client::connect(&alpha)
        .unwrap()
        .call_tool("echo", json!({"text": "no token"}))
        .await;
    assert!(
        matches!(refused, Err(ClientError::Status { status: 401, .. })),
        "{refused:?}"
    );
    let register = post(
        format!("{}/register", b.url),
        json!({"type": "mcp_server", "name": "alpha", "capabilities": {}}),
    )
    .await;
    assert_eq!(register.status(), 401, "a server without its token");
    reverse.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_taken_over_registration_keeps_its_owner_token() {
    const OWNER: &str = "cluster-owner-token-0123456789ab";
    const OTHER: &str = "cluster-other-token-0123456789ab";
    let redis = Redis::start();
    let tokens = |c: &mut Config| {
        let mut set = TokenSet::new();
        for token in [OWNER, OTHER] {
            set.add_spec(TokenKind::Server, token, "test").unwrap();
        }
        c.auth = Auth::with_tokens(set);
    };
    let a = Node::start_with(&redis, tokens).await;
    let b = Node::start_with(&redis, tokens).await;
    let http = reqwest::Client::new();
    let reg: Value = http
        .post(format!("{}/register", a.url))
        .bearer_auth(OWNER)
        .json(&json!({"type": "mcp_server", "capabilities": {}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = reg["session_id"].as_str().unwrap().to_owned();
    a.kill().await;

    let poll = |token: &'static str| {
        let (http, url) = (
            http.clone(),
            format!("{}/poll?session_id={session}&timeout=0", b.url),
        );
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // Another valid server token never gets the registration, before or after the takeover.
    let start = Instant::now();
    loop {
        match poll(OTHER).await {
            502 => assert!(start.elapsed() < DEADLINE, "A never noticed dead"),
            401 => break,
            other => panic!("another token's poll: {other}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(poll(OWNER).await, 204, "its own token carries on");
    assert_eq!(poll(OTHER).await, 401);
}

#[tokio::test]
async fn a_token_of_another_pool_claims_nothing_in_the_cluster() {
    const ALPHA: &str = "cluster-alpha-server-token-012345";
    const BETA: &str = "cluster-beta-server-token-0123456";
    let redis = Redis::start();
    let tokens = |c: &mut Config| {
        let mut set = TokenSet::new();
        set.add_spec(TokenKind::Server, &format!("{ALPHA}:alpha"), "test")
            .unwrap();
        set.add_spec(TokenKind::Server, &format!("{BETA}:beta"), "test")
            .unwrap();
        c.auth = Auth::with_tokens(set);
    };
    let a = Node::start_with(&redis, tokens).await;
    let b = Node::start_with(&redis, tokens).await;
    let http = reqwest::Client::new();
    let register = |node: &Node, token: &str| {
        http.post(format!("{}/register", node.url))
            .bearer_auth(token)
            .json(&json!({"type": "mcp_server", "name": "beta", "capabilities": {}}))
            .send()
    };
    let beta_home = || redis.cli(&["GET", "mcp-proxy:pool:beta"]);

    // Alpha's (valid) token names pool beta: refused, and no instance became beta's home.
    for node in [&a, &b] {
        let refused = register(node, ALPHA).await.unwrap();
        assert_eq!(refused.status(), 401, "at {}", node.url);
    }
    assert_eq!(redis.cli(&["EXISTS", "mcp-proxy:pool:beta"]), "0");

    // Beta's own server, through B, makes B its home (A claimed nothing before it).
    let reg: Value = register(&b, BETA).await.unwrap().json().await.unwrap();
    let session = reg["session_id"].as_str().unwrap().to_owned();
    let b_id = b.health().await["instance"].as_str().unwrap().to_owned();
    assert_eq!(beta_home(), b_id);
    assert_eq!(b.health().await["registrations"], 1);
    assert_eq!(a.health().await["registrations"], 0);

    // B is lost: alpha's token, polling beta's registration through A, takes nothing over.
    b.kill().await;
    let poll = |token: &'static str| {
        let (http, url) = (
            http.clone(),
            format!("{}/poll?session_id={session}&timeout=0", a.url),
        );
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let start = Instant::now();
    loop {
        match poll(ALPHA).await {
            // Until B is known dead, the relay to it fails.
            502 => assert!(start.elapsed() < DEADLINE, "B never noticed dead"),
            401 | 404 => break,
            other => panic!("another pool's token polled beta's registration: {other}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        beta_home(),
        b_id,
        "beta stays B's, dead, until its own server comes"
    );
    assert_eq!(a.health().await["registrations"], 0);
    // Its own token carries on through A, which takes the pool over then.
    assert_eq!(poll(BETA).await, 204);
    let a_id = a.health().await["instance"].as_str().unwrap().to_owned();
    assert_eq!(beta_home(), a_id);
}
