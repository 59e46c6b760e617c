//! Property: random bytes and random JSON thrown at every route get a prompt, well-formed
//! answer (never a 500, never a hang), while a real client and server keep working and their
//! answers stay correct.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestRunner};
use serde_json::{json, Map, Value};

use super::common::{client, echo, post, test_config, Proxy};
use super::modern::ModernServer;

/// Any JSON value, a few levels deep, with the keys the proxy looks for among random ones.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "[ -~]{0,12}".prop_map(Value::String),
        Just(json!("2.0")),
        Just(json!("tools/call")),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        let key = prop_oneof![
            Just("jsonrpc".to_owned()),
            Just("id".to_owned()),
            Just("method".to_owned()),
            Just("params".to_owned()),
            Just("request_id".to_owned()),
            Just("response".to_owned()),
            Just("message".to_owned()),
            Just("client_session".to_owned()),
            Just("capabilities".to_owned()),
            Just("name".to_owned()),
            "[a-z_]{1,8}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A body: raw bytes, or JSON text.
fn any_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        any_json().prop_map(|v| v.to_string().into_bytes()),
    ]
}

/// Where junk goes: (method, path). `{real}` is the real server's session id: junk may be
/// posted as its answers, but never polled with it (a poll would take the real client's
/// request) nor deleted.
const TARGETS: &[(&str, &str)] = &[
    ("POST", "/message"),
    ("POST", "/servers/junk/message"),
    ("POST", "/servers/bad%20name/message"),
    ("POST", "/mcp"),
    ("GET", "/mcp"),
    ("DELETE", "/mcp"),
    ("POST", "/servers/junk/mcp"),
    ("POST", "/register"),
    (
        "DELETE",
        "/register?session_id=m-00000000000000000000000000000000",
    ),
    (
        "GET",
        "/poll?session_id=m-00000000000000000000000000000000&timeout=0",
    ),
    ("GET", "/poll?session_id=zz&timeout=-1"),
    ("POST", "/response?session_id={real}"),
    (
        "POST",
        "/response?session_id=m-00000000000000000000000000000000",
    ),
    ("POST", "/response"),
    ("GET", "/healthz"),
    ("GET", "/servers"),
    ("GET", "/metrics"),
    ("POST", "/nowhere"),
];

#[test]
fn junk_at_every_route_never_disturbs_a_real_client_and_server() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (proxy, server) = rt.block_on(async {
        let proxy = Proxy::start(test_config()).await;
        let server = ModernServer::spawn(&proxy, None, 2).await;
        (proxy, server)
    });
    let http = client();
    let mut runner = TestRunner::new(PropConfig {
        cases: 96,
        failure_persistence: None,
        ..PropConfig::default()
    });
    let calls = std::sync::atomic::AtomicU32::new(0);
    let strategy = (
        0..TARGETS.len(),
        any_body(),
        prop::option::of("[ -~]{0,40}"),
        any::<bool>(),
    );
    let result = runner.run(&strategy, |(target, body, session, json_type)| {
        let n = calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let (method, path) = TARGETS[target];
        let path = path.replace("{real}", &server.session);
        rt.block_on(async {
            let mut req = http
                .request(method.parse().unwrap(), proxy.url(&path))
                .header("accept", "application/json, text/event-stream")
                .body(body);
            if json_type {
                req = req.header("content-type", "application/json");
            }
            if let Some(s) = session.filter(|s| !s.is_empty()) {
                req = req.header("mcp-session-id", s);
            }
            let resp = tokio::time::timeout(Duration::from_secs(5), req.send())
                .await
                .expect("the proxy answers junk promptly")
                .unwrap();
            let status = resp.status().as_u16();
            prop_assert!(
                status < 500 || [502, 503, 504].contains(&status),
                "{method} {path} answered {status}"
            );
            // A real call still gets exactly its own answer.
            let text = format!("real call {n}");
            let (s, v) = post(&http, &proxy.url("/message"), echo(json!(n), &text)).await;
            prop_assert_eq!(s, 200, "{}", v);
            prop_assert_eq!(&v["id"], &json!(n));
            prop_assert_eq!(&v["result"]["content"][0]["text"], &json!(text));
            Ok(())
        })
    });
    rt.block_on(async {
        server.stop().await;
        proxy.stop().await;
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
