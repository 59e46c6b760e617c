//! A seed-style (legacy) registration, faked over raw HTTP as the seed's C++ reverse client
//! speaks, never receives the item kinds it cannot read (`reply`, `session_closed`), even when
//! a Streamable HTTP client answers server requests and ends its session; and it keeps long
//! polling beside a reverse client on its channel in the same pool.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcp_client::{text_of, Client};
use mcp_reverse::{Configuration, ReverseClient};
use mcp_server::{demo, Server, ServerConfig};
use serde_json::{json, Value};

use crate::common::{client, Proxy, DEADLINE};

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

/// `GET /servers`: the default pool's members, oldest first.
async fn members(proxy: &Proxy) -> Vec<Value> {
    let servers: Value = reqwest::get(format!("{}/servers", proxy.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    servers["pools"][0]["members"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The `(kind, delivery)` of each member, oldest first.
async fn deliveries(proxy: &Proxy) -> Vec<(String, String)> {
    members(proxy)
        .await
        .iter()
        .map(|m| {
            let s = |k: &str| m[k].as_str().unwrap_or_default().to_owned();
            (s("kind"), s("delivery"))
        })
        .collect()
}

/// Upgrades the proxy accepted on `/channel` (101), from its metrics.
async fn channels_opened(proxy: &Proxy) -> String {
    let text = reqwest::get(format!("{}/metrics", proxy.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = text.lines().find(|l| {
        l.starts_with("mcp_proxy_request_duration_seconds_count{route=\"/channel\",status=\"101\"}")
    });
    line.and_then(|l| l.rsplit(' ').next())
        .unwrap_or("0")
        .to_owned()
}

#[tokio::test]
async fn a_seed_registration_long_polls_beside_a_channel_client_in_the_same_pool() {
    let proxy = Proxy::start().await;
    let (seed, items) = seed_server(&proxy).await;
    let server = Server::new(ServerConfig::new("channel member", "1.0.0"));
    demo::register_seed_tools(&server, false);
    // The default transport (`auto`), in the default pool, as the seed's registration.
    let mut config = Configuration::new(&proxy.url).with_held_polls(2);
    config.retry_delay_seconds = 1;
    config.shutdown_grace = Duration::from_secs(2);
    let reverse = ReverseClient::new(server, config).unwrap().spawn();
    proxy.wait_registrations(2).await;
    let mixed = || {
        vec![
            ("legacy".to_owned(), "poll".to_owned()),
            ("modern".to_owned(), "channel".to_owned()),
        ]
    };
    let start = Instant::now();
    while deliveries(&proxy).await != mixed() {
        assert!(start.elapsed() < DEADLINE, "{:?}", deliveries(&proxy).await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Two client sessions on /mcp: new sessions spread over the members, one each.
    let mut sessions = Vec::new();
    let mut names = Vec::new();
    for _ in 0..2 {
        let session = Client::connect(&proxy.mcp()).unwrap();
        names.push(session.initialize().await.unwrap().server_info.name);
        sessions.push(Arc::new(session));
    }
    names.sort();
    assert_eq!(names, ["channel member", "seed"]);

    // Both members serve at once, beside the seed client's sessionless shapes on /message.
    let http = reqwest::Client::new();
    let mut calls = Vec::new();
    for i in 0..20 {
        for (s, session) in sessions.iter().enumerate() {
            let session = session.clone();
            calls.push(tokio::spawn(async move {
                let text = format!("session {s} call {i}");
                let got = session.call_tool("echo", json!({"text": text})).await;
                (text, text_of(&got.unwrap()))
            }));
        }
        let (http, url) = (http.clone(), format!("{}/message", proxy.url));
        calls.push(tokio::spawn(async move {
            let text = format!("sessionless call {i}");
            let body = json!({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"text": text}}});
            let resp = http.post(url).json(&body).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            let answer: Value = resp.json().await.unwrap();
            assert_eq!(answer["id"], i, "{answer}");
            let got = answer["result"]["content"][0]["text"]
                .as_str()
                .unwrap_or_default();
            (text, got.to_owned())
        }));
    }
    for call in calls {
        let (asked, got) = call.await.unwrap();
        assert_eq!(got, asked);
    }

    // The seed's registration got its share by long polls, plain request items only, and every
    // answer it posted was taken (its task asserts 200 and is still running); it never
    // opened a channel (the proxy accepted exactly one, the reverse client's).
    assert!(!seed.is_finished(), "the seed's poll loop failed");
    let seen = items.lock().unwrap().clone();
    assert!(seen.len() >= 21, "the seed served {} items", seen.len());
    for item in &seen {
        assert!(item["request"]["method"].is_string(), "{item}");
        assert!(item.get("kind").is_none(), "{item}");
        assert!(item.get("client_session").is_none(), "{item}");
    }
    assert_eq!(deliveries(&proxy).await, mixed());
    assert_eq!(channels_opened(&proxy).await, "1");
    reverse.shutdown().await.unwrap();
    seed.abort();
    proxy.stop().await;
}
