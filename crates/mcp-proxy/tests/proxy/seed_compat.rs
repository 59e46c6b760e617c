//! The seed's own programs, unmodified in behaviour, through the proxy.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{json, Value};

use super::common::{client, echo, post, rpc, test_config, wait_until, Proxy};
use super::seed::SeedServer;

const RETRY: Duration = Duration::from_millis(50);

/// The seed client's sequence, as its `proxy_client_example` runs it.
async fn seed_client_session(http: &reqwest::Client, url: &str) {
    let (s, v) = post(
        http,
        url,
        rpc(
            json!(1),
            "initialize",
            json!({
        "protocolVersion": "2024-11-05", "capabilities": {},
        "clientInfo": {"name": "proxy_client_example", "version": "1.0.0"}}),
        ),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["id"], 1);
    assert_eq!(v["result"]["serverInfo"]["name"], "Reverse MCP Server");

    // `notifications/initialized` *with* an id: the server answers null, the client needs 200 + JSON.
    let (s, v) = post(
        http,
        url,
        rpc(json!(2), "notifications/initialized", json!({})),
    )
    .await;
    assert_eq!(
        (s, v),
        (200, json!({"jsonrpc": "2.0", "id": 2, "result": {}}))
    );

    let (s, v) = post(http, url, rpc(json!(3), "tools/list", json!({}))).await;
    assert_eq!(s, 200);
    assert_eq!(v["result"]["tools"][0]["name"], "echo");

    let (s, v) = post(
        http,
        url,
        rpc(
            json!(4),
            "tools/call",
            json!({"name": "echo",
        "arguments": {"text": "Hello from reverse proxy!", "uppercase": true}}),
        ),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["id"], 4);
    assert_eq!(
        v["result"]["content"][0]["text"],
        "HELLO FROM REVERSE PROXY!"
    );

    let (s, v) = post(http, url, rpc(json!(5), "ping", json!({}))).await;
    assert_eq!(
        (s, v),
        (200, json!({"jsonrpc": "2.0", "id": 5, "result": {}}))
    );
}

#[tokio::test]
async fn seed_reverse_client_and_seed_client_work_unmodified() {
    let proxy = Proxy::start(test_config()).await;
    let seed = SeedServer::spawn(proxy.url(""), RETRY);
    let http = client();
    wait_until("the seed registration", || async {
        seed.session_id().is_some()
    })
    .await;
    let url = proxy.url("/message");
    seed_client_session(&http, &url).await;

    // The server's own JSON-RPC errors come back with HTTP 200.
    let (s, v) = post(&http, &url, rpc(json!(6), "no/such", json!({}))).await;
    assert_eq!(s, 200);
    assert_eq!(v["error"]["code"], -32601);
    let (s, v) = post(
        &http,
        &url,
        rpc(json!(7), "tools/call", json!({"name": "nope"})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["error"]["code"], -32602);

    // A real notification: 202, and the seed's `null` answer is accepted with 200 "ok".
    let (s, v) = post(
        &http,
        &url,
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!((s, v), (202, Value::Null));
    wait_until("the null response", || async {
        seed.handled.load(Ordering::SeqCst) == 8
    })
    .await;
    wait_until("the /response answer", || async {
        seed.response_answers.lock().unwrap().len() == 8
    })
    .await;
    for (status, body) in seed.response_answers.lock().unwrap().iter() {
        assert_eq!((*status, body), (200, &json!({"status": "ok"})));
    }
    assert_eq!(proxy.state.broker.stats().pending, 0);
    assert_eq!(seed.registrations.load(Ordering::SeqCst), 1);
    seed.stop().await;
    proxy.stop().await;
}

#[tokio::test]
async fn a_proxy_restart_re_adopts_the_seed_session() {
    let first = Proxy::start(test_config()).await;
    let addr = first.addr;
    let seed = SeedServer::spawn(first.url(""), RETRY);
    let http = client();
    wait_until("the seed registration", || async {
        seed.session_id().is_some()
    })
    .await;
    let (s, _) = post(&http, &first.url("/message"), echo(json!(1), "before")).await;
    assert_eq!(s, 200);
    first.stop().await;

    // Same port, fresh state: the seed never registers again, it just keeps polling.
    let second = Proxy::start_at(addr, test_config()).await;
    wait_until("re-adoption", || async {
        second.state.broker.stats().registrations == 1
    })
    .await;
    seed_client_session(&http, &second.url("/message")).await;
    assert_eq!(
        seed.registrations.load(Ordering::SeqCst),
        1,
        "never re-registers"
    );
    seed.stop().await;
    second.stop().await;
}
