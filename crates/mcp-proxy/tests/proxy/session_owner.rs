//! A client session on `/mcp` belongs to the credentials that opened it: another caller
//! with a valid token for the same pool who learns its id gets the 404 of an unknown session,
//! on every method (POST, GET, DELETE) and on `/message`, and the owner carries on.

use mcp_proxy::auth::{Auth, TokenKind, TokenSet};
use mcp_proxy::Config;
use serde_json::{json, Value};

use super::common::{client, echo, test_config, Proxy};
use super::fake::{init_result, initialize, mcp_post, FakeServer, BOTH};
use super::oauth::{claims, oauth_config, Issuer, SigningKey};

const ALICE: &str = "alice-client-token-0123456789";
const BOB: &str = "bob-client-token-0123456789ab";

/// `initialize` on `path` with `token`, answered by `server`; the session id.
async fn open(proxy: &Proxy, server: &FakeServer, path: &str, token: &str) -> String {
    let http = client();
    let call = mcp_post(
        &http,
        &proxy.url(path),
        "application/json",
        None,
        &initialize(1),
    )
    .bearer_auth(token)
    .send();
    let serve = async {
        let item = server.next_item(proxy).await;
        server.answer(proxy, &item, init_result()).await;
    };
    let (resp, ()) = tokio::join!(call, serve);
    let resp = resp.unwrap();
    assert_eq!(resp.status(), 200);
    resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// An echo call on `session` with `token`, answered by `server` when it reaches it; the
/// status and body.
async fn call(
    proxy: &Proxy,
    server: &FakeServer,
    path: &str,
    session: &str,
    token: &str,
) -> (u16, Value) {
    let http = client();
    let req = mcp_post(
        &http,
        &proxy.url(path),
        "application/json",
        Some(session),
        &echo(json!(7), "hi"),
    )
    .bearer_auth(token)
    .send();
    let resp = tokio::select! {
        resp = req => resp.unwrap(),
        // Reached the server: answer, then take the client's answer.
        item = server.next_item(proxy) => {
            server.answer(proxy, &item, json!({"content": []})).await;
            return (200, Value::Null);
        }
    };
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Every way a stranger could use `session` is answered as an unknown session.
async fn refused_everywhere(
    proxy: &Proxy,
    path: &str,
    message_path: &str,
    session: &str,
    token: &str,
) {
    let http = client();
    let post = mcp_post(
        &http,
        &proxy.url(path),
        BOTH,
        Some(session),
        &echo(json!(3), "x"),
    )
    .bearer_auth(token)
    .send()
    .await
    .unwrap();
    assert_eq!(post.status(), 404);
    let body: Value = post.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32001, "{body}");
    assert_eq!(body["id"], 3);
    let get = http
        .get(proxy.url(path))
        .header("accept", "text/event-stream")
        .header("mcp-session-id", session)
        .header("mcp-protocol-version", "2025-11-25")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 404);
    let delete = http
        .delete(proxy.url(path))
        .header("mcp-session-id", session)
        .header("mcp-protocol-version", "2025-11-25")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 404);
    let message = http
        .post(proxy.url(message_path))
        .header("content-type", "application/json")
        .header("mcp-session-id", session)
        .bearer_auth(token)
        .body(echo(json!(4), "x").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(message.status(), 404);
    let body: Value = message.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32001, "{body}");
}

#[tokio::test]
async fn a_static_token_session_refuses_other_tokens() {
    let mut tokens = TokenSet::new();
    for t in [ALICE, BOB] {
        tokens
            .add_spec(TokenKind::Client, &format!("{t}:*"), "test")
            .unwrap();
    }
    let proxy = Proxy::start(Config {
        auth: Auth::with_tokens(tokens),
        ..test_config()
    })
    .await;
    let server = FakeServer::register(&proxy, None, &["2025-11-25"]).await;
    let session = open(&proxy, &server, "/mcp", ALICE).await;
    refused_everywhere(&proxy, "/mcp", "/message", &session, BOB).await;
    // Nothing reached the server, and the owner carries on (the DELETE did not end it).
    assert!(server.queue_is_empty(&proxy).await);
    let (status, body) = call(&proxy, &server, "/mcp", &session, ALICE).await;
    assert_eq!(status, 200, "{body}");
    server.leave().await;
    proxy.stop().await;
}

#[tokio::test]
async fn an_access_token_session_refuses_other_subjects_but_not_a_new_token_of_its_own() {
    let key = SigningKey::es256("k1");
    let issuer = Issuer::start(&[&key]).await;
    let proxy = Proxy::start(oauth_config(&issuer.url(), |_| {})).await;
    let server = FakeServer::register(&proxy, Some("alpha"), &["2025-11-25"]).await;
    let path = "/servers/alpha/mcp";
    let alice = key.sign(&claims(&issuer.url()));
    let session = open(&proxy, &server, path, &alice).await;

    let mut other = claims(&issuer.url());
    other["sub"] = json!("user-2");
    let bob = key.sign(&other);
    refused_everywhere(&proxy, path, "/servers/alpha/message", &session, &bob).await;
    // A static client token for every pool is someone else too.
    refused_everywhere(
        &proxy,
        path,
        "/servers/alpha/message",
        &session,
        super::oauth::STATIC_CLIENT,
    )
    .await;
    assert!(server.queue_is_empty(&proxy).await);

    // The same subject with a fresh token (a refresh) keeps its session.
    let mut renewed = claims(&issuer.url());
    renewed["iat"] = json!(super::oauth::now() + 1);
    renewed["jti"] = json!("another");
    let (status, body) = call(&proxy, &server, path, &session, &key.sign(&renewed)).await;
    assert_eq!(status, 200, "{body}");
    server.leave().await;
    proxy.stop().await;
}
