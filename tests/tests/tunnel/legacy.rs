//! A seed-style (legacy) registration, faked over raw HTTP as the seed's C++ reverse client
//! speaks, never receives the item kinds it cannot read (`reply`, `session_closed`), even when
//! a Streamable HTTP client answers server requests and ends its session.

use std::sync::{Arc, Mutex};

use mcp_client::text_of;
use serde_json::{json, Value};

use crate::common::{client, Proxy};

/// Registers like the seed and serves polls until aborted: answers `initialize`, echoes
/// `tools/call`'s `text`, `{}` for other requests, `null` after notifications. Every item it
/// polled is recorded.
async fn seed_server(proxy: &Proxy) -> (tokio::task::JoinHandle<()>, Arc<Mutex<Vec<Value>>>) {
    let http = reqwest::Client::new();
    let registered: Value = http
        .post(format!("{}/register", proxy.url))
        .json(&json!({"type": "mcp_server", "timestamp": 1_731_328_496_u64}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = registered["session_id"].as_str().unwrap().to_owned();
    assert_eq!(session.len(), 32, "a legacy id: {session}");
    let items = Arc::new(Mutex::new(Vec::new()));
    let seen = items.clone();
    let base = proxy.url.clone();
    let task = tokio::spawn(async move {
        loop {
            let resp = http
                .get(format!("{base}/poll"))
                .query(&[("session_id", &session)])
                .send()
                .await
                .unwrap();
            if resp.status() == 204 {
                continue;
            }
            assert_eq!(resp.status(), 200);
            let item: Value = resp.json().await.unwrap();
            seen.lock().unwrap().push(item.clone());
            let request = &item["request"];
            let response = match request.get("id") {
                None => Value::Null,
                Some(id) => {
                    let result = match request["method"].as_str().unwrap_or_default() {
                        "initialize" => json!({"protocolVersion": "2025-11-25",
                            "capabilities": {"tools": {}},
                            "serverInfo": {"name": "seed", "version": "1"}}),
                        "tools/call" => json!({"content": [{"type": "text",
                            "text": request["params"]["arguments"]["text"]}]}),
                        _ => json!({}),
                    };
                    json!({"jsonrpc": "2.0", "id": id, "result": result})
                }
            };
            let posted = http
                .post(format!("{base}/response"))
                .query(&[("session_id", &session)])
                .json(&json!({"request_id": item["request_id"], "response": response}))
                .send()
                .await
                .unwrap();
            assert_eq!(posted.status(), 200);
        }
    });
    proxy.wait_registrations(1).await;
    (task, items)
}

#[tokio::test]
async fn a_legacy_registration_never_receives_replies_or_session_closed() {
    let proxy = Proxy::start().await;
    let (server, items) = seed_server(&proxy).await;

    let client = client(&proxy.mcp(), Default::default()).await;
    let session = client.session_id().expect("a session on /mcp");
    // The client answers a server request (as if one had been sent): a `reply` item for a
    // modern registration, nothing for this one.
    let answered = reqwest::Client::new()
        .post(proxy.mcp())
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-11-25")
        .body(json!({"jsonrpc": "2.0", "id": "s-1", "result": {}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 202);
    // Ending the session: `session_closed` for a modern registration, nothing for this one.
    client.close().await.unwrap();

    // A marker after both: items are handed over in order, so anything queued for the
    // registration before it would have been polled first.
    let marker = mcp_client::Client::connect(&proxy.url).unwrap();
    let result = marker
        .call_tool("echo", json!({"text": "marker"}))
        .await
        .unwrap();
    assert_eq!(text_of(&result), "marker");

    let items = items.lock().unwrap().clone();
    let methods: Vec<_> = items
        .iter()
        .map(|i| i["request"]["method"].as_str().unwrap_or("?").to_owned())
        .collect();
    assert_eq!(
        methods,
        ["initialize", "notifications/initialized", "tools/call"],
        "{items:#?}"
    );
    for item in &items {
        assert!(item.get("kind").is_none(), "{item}");
        assert!(item.get("client_session").is_none(), "{item}");
        assert!(item.get("headers").is_none(), "{item}");
    }
    server.abort();
    proxy.stop().await;
}
