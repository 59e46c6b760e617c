//! Bounds on what a caller can make the proxy keep: registration fields, registrations in
//! all and per address (auth off) including legacy re-adoptions, client sessions per caller.

use serde_json::{json, Value};

use super::common::{client, test_config, Proxy};
use super::fake::{init_result, initialize, mcp_post, FakeServer};

async fn register_raw(proxy: &Proxy, body: String) -> (u16, Value) {
    let resp = client()
        .post(proxy.url("/register"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// An `initialize` POST to `/mcp` without a session, accepting `accept`.
fn initialize_call(
    http: &reqwest::Client,
    proxy: &Proxy,
    accept: &str,
    id: i64,
) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> {
    mcp_post(http, &proxy.url("/mcp"), accept, None, &initialize(id)).send()
}

fn modern(name: &str) -> String {
    json!({"type":"mcp_server","name":name,
        "capabilities":{"held_polls":0,"protocol_versions":["2025-11-25"]}})
    .to_string()
}

#[tokio::test]
async fn a_bloated_registration_is_refused_and_nothing_is_kept() {
    let proxy = Proxy::start(mcp_proxy::Config {
        max_body_bytes: 8 * 1024 * 1024,
        ..test_config()
    })
    .await;
    let versions: Vec<&str> = vec!["2025-11-25"; 500_000];
    let body = json!({"type":"mcp_server",
        "capabilities":{"held_polls":1,"protocol_versions":versions}})
    .to_string();
    assert!(body.len() > 4 * 1024 * 1024);
    let (status, v) = register_raw(&proxy, body).await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains("protocol_versions")
            || v.to_string().contains("protocol_versions"),
        "{v}"
    );
    let long_name = modern(&"n".repeat(65));
    assert_eq!(register_raw(&proxy, long_name).await.0, 400);
    assert_eq!(proxy.state.broker.stats().registrations, 0);
}

#[tokio::test]
async fn registrations_without_a_token_are_capped_per_address() {
    let proxy = Proxy::start(mcp_proxy::Config {
        max_registrations_per_address: 3,
        ..test_config()
    })
    .await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (status, v) = register_raw(&proxy, modern("alpha")).await;
        assert_eq!(status, 200, "{v}");
        ids.push(v["session_id"].as_str().unwrap().to_owned());
    }
    let resp = client()
        .post(proxy.url("/register"))
        .header("content-type", "application/json")
        .body(modern("alpha"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let v: Value = resp.json().await.unwrap();
    assert!(
        v.to_string()
            .contains("too many registrations from this address"),
        "{v}"
    );
    // Leaving frees a place.
    let resp = client()
        .delete(proxy.url(&format!("/register?session_id={}", ids[0])))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(register_raw(&proxy, modern("alpha")).await.0, 200);
}

#[tokio::test]
async fn registrations_are_capped_in_all() {
    let proxy = Proxy::start(mcp_proxy::Config {
        max_registrations: 2,
        ..test_config()
    })
    .await;
    assert_eq!(register_raw(&proxy, modern("a")).await.0, 200);
    assert_eq!(register_raw(&proxy, modern("b")).await.0, 200);
    let (status, v) = register_raw(&proxy, modern("c")).await;
    assert_eq!(status, 503, "{v}");
}

#[tokio::test]
async fn a_legacy_re_adoption_counts_against_the_same_quota() {
    let proxy = Proxy::start(mcp_proxy::Config {
        max_registrations_per_address: 1,
        ..test_config()
    })
    .await;
    assert_eq!(register_raw(&proxy, modern("a")).await.0, 200);
    // An unknown id of the legacy format would be re-adopted: not over the quota.
    let unknown = uuid::Uuid::new_v4().simple().to_string();
    let resp = client()
        .get(proxy.url(&format!("/poll?session_id={unknown}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(proxy.state.broker.stats().registrations, 1);
}

#[tokio::test]
async fn client_sessions_are_capped_per_caller_and_an_ended_one_frees_its_place() {
    let proxy = Proxy::start(mcp_proxy::Config {
        max_sessions_per_caller: 2,
        ..test_config()
    })
    .await;
    let server = FakeServer::register(&proxy, None, &["2025-11-25"]).await;
    let http = client();
    let open = || async {
        let call = initialize_call(&http, &proxy, "application/json", 1);
        let serve = async {
            // A DELETE before sent this server a session_closed item: skip to the request.
            let item = loop {
                let item = server.next_item(&proxy).await;
                if item.get("request").is_some() {
                    break item;
                }
            };
            server.answer(&proxy, &item, init_result()).await;
        };
        let (resp, ()) = tokio::join!(call, serve);
        resp.unwrap()
    };
    let first = open().await;
    assert_eq!(first.status(), 200);
    let first_id = first.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(open().await.status(), 200);
    // The third is refused before it reaches the server (nothing to serve).
    let third = initialize_call(&http, &proxy, "application/json", 3)
        .await
        .unwrap();
    assert_eq!(third.status(), 429);
    let resp = http
        .delete(proxy.url("/mcp"))
        .header("mcp-session-id", &first_id)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(open().await.status(), 200);
}

#[tokio::test]
async fn an_initialize_abandoned_before_its_answer_leaves_no_session() {
    let proxy = Proxy::start(test_config()).await;
    let server = FakeServer::register(&proxy, None, &["2025-11-25"]).await;
    let http = client();
    // SSE: the client reads the head (and the session id), then hangs up unanswered.
    let resp = initialize_call(&http, &proxy, super::fake::BOTH, 1)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("mcp-session-id"));
    let item = server.next_item(&proxy).await;
    assert_eq!(item["request"]["method"], "initialize");
    assert_eq!(proxy.state.broker.stats().sessions, 1);
    drop(resp);
    super::common::wait_until("the abandoned SSE session ends", || async {
        proxy.state.broker.stats().sessions == 0
    })
    .await;
    // Its server is told, so it drops the session's state too.
    let closed = server.next_item(&proxy).await;
    assert_eq!(closed["kind"], "session_closed", "{closed}");

    // JSON: the client gives up while waiting.
    let call = initialize_call(&http, &proxy, "application/json", 2);
    let gave_up = tokio::time::timeout(std::time::Duration::from_millis(300), call).await;
    assert!(gave_up.is_err(), "nobody answered");
    let _ = server.next_item(&proxy).await;
    super::common::wait_until("the abandoned JSON session ends", || async {
        proxy.state.broker.stats().sessions == 0
    })
    .await;
}

#[tokio::test]
async fn a_client_that_hangs_up_after_reading_its_initialize_answer_keeps_its_session() {
    let proxy = Proxy::start(test_config()).await;
    let server = FakeServer::register(&proxy, None, &["2025-11-25"]).await;
    let http = client();
    let resp = initialize_call(&http, &proxy, super::fake::BOTH, 1)
        .await
        .unwrap();
    let session = resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let mut sse = super::fake::Sse::new(resp);
    let item = server.next_item(&proxy).await;
    server.answer(&proxy, &item, init_result()).await;
    let (_, answer) = sse.message().await.expect("the answer");
    assert_eq!(answer["id"], 1);
    drop(sse);
    // Still there, and usable.
    let ping = mcp_post(
        &http,
        &proxy.url("/mcp"),
        "application/json",
        Some(&session),
        &json!({"jsonrpc":"2.0","id":2,"method":"ping"}),
    )
    .send();
    let serve = async {
        let item = server.next_item(&proxy).await;
        server.answer(&proxy, &item, json!({})).await;
    };
    let (resp, ()) = tokio::join!(ping, serve);
    assert_eq!(resp.unwrap().status(), 200);
}
