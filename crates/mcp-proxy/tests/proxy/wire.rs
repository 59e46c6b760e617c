//! The reverse-client routes: registration, polls and answers, every status of the contract.

use serde_json::{json, Value};

use super::common::{client, echo, poll, post, post_raw, register, respond, test_config, Proxy};

#[tokio::test]
async fn register_answers_the_seed_shape_and_refuses_bad_bodies() {
    let proxy = Proxy::start(test_config()).await;
    let http = client();
    let (s, v) = post(
        &http,
        &proxy.url("/register"),
        json!({"type": "mcp_server", "timestamp": 1}),
    )
    .await;
    assert_eq!(s, 200);
    let id = v["session_id"].as_str().unwrap();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "legacy id: {id}"
    );
    assert_eq!(
        (&v["poll_endpoint"], &v["response_endpoint"]),
        (&json!("/poll"), &json!("/response"))
    );
    let m = register(
        &http,
        &proxy,
        json!({"type": "mcp_server", "capabilities": {}}),
    )
    .await;
    assert!(m.starts_with("m-") && m.len() == 34);
    let (s, v) = post(
        &http,
        &proxy.url("/register"),
        json!({"type": "mcp_server", "name": "no spaces"}),
    )
    .await;
    assert_eq!((s, &v["error"]), (400, &json!("invalid_name")));
    let (s, v) = post_raw(&http, &proxy.url("/register"), "{nope").await;
    assert_eq!((s, &v["error"]), (400, &json!("invalid_body")));
    let (s, v) = post(
        &http,
        &proxy.url("/register"),
        json!({"type": "web_server"}),
    )
    .await;
    assert_eq!((s, &v["error"]), (400, &json!("invalid_body")));
    let v = super::common::health(&http, &proxy).await;
    assert_eq!(v, json!({"status": "ok", "registrations": 2, "pending": 0}));
    proxy.stop().await;
}

#[tokio::test]
async fn poll_statuses() {
    let proxy = Proxy::start(test_config()).await;
    let http = client();
    let (s, v) = poll(&http, &proxy, &format!("m-{}", "0".repeat(32)), 0).await;
    assert_eq!((s, &v["error"]), (404, &json!("unknown_session")));
    let (s, v) = poll(&http, &proxy, "not-an-id", 0).await;
    assert_eq!((s, &v["error"]), (404, &json!("unknown_session")));
    let resp = http.get(proxy.url("/poll")).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let resp = http
        .get(proxy.url("/poll?session_id=x&timeout=-1"))
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "invalid_query");
    // An unknown legacy-format id is re-adopted, not refused.
    let (s, _) = poll(&http, &proxy, &"a".repeat(32), 0).await;
    assert_eq!(s, 204);
    assert_eq!(proxy.state.broker.stats().registrations, 1);
    proxy.stop().await;
}

#[tokio::test]
async fn response_statuses_for_legacy_and_modern() {
    let proxy = Proxy::start(test_config()).await;
    let http = client();
    let legacy = register(&http, &proxy, json!({"type": "mcp_server"})).await;
    let modern = register(
        &http,
        &proxy,
        json!({"type": "mcp_server", "name": "m", "capabilities": {}}),
    )
    .await;
    let answer = json!({"jsonrpc": "2.0", "id": 1, "result": {}});
    let unknown = json!({"request_id": "r-unknown", "response": answer});

    assert_eq!(
        respond(&http, &proxy, &legacy, unknown.clone()).await,
        (200, json!({"status": "ignored"}))
    );
    let (s, v) = respond(&http, &proxy, &modern, unknown.clone()).await;
    assert_eq!((s, &v["error"]), (404, &json!("unknown_request")));
    let (s, v) = respond(
        &http,
        &proxy,
        &format!("m-{}", "1".repeat(32)),
        unknown.clone(),
    )
    .await;
    assert_eq!((s, &v["error"]), (404, &json!("unknown_session")));
    assert_eq!(
        respond(&http, &proxy, &"b".repeat(32), unknown.clone()).await,
        (200, json!({"status": "ignored"}))
    );
    let (s, v) = respond(&http, &proxy, "bad", unknown.clone()).await;
    assert_eq!((s, &v["error"]), (404, &json!("unknown_session")));
    let (s, v) = respond(&http, &proxy, &modern, json!({"request_id": "r-x"})).await;
    assert_eq!((s, &v["error"]), (400, &json!("invalid_body")));

    // A final answer lands once; the retry is a duplicate; the client is unaffected.
    let call = {
        let (http, url) = (http.clone(), proxy.url("/servers/m/message"));
        tokio::spawn(async move { post(&http, &url, echo(json!(1), "x")).await })
    };
    let (_, item) = poll(&http, &proxy, &modern, 5).await;
    // Interim messages: a notification is dropped, a request to the client is refused by a reply.
    let rid = item["request_id"].clone();
    let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 1}});
    assert_eq!(
        respond(
            &http,
            &proxy,
            &modern,
            json!({"request_id": rid, "message": progress})
        )
        .await,
        (200, json!({"status": "ok"}))
    );
    let ask =
        json!({"jsonrpc": "2.0", "id": "s-1", "method": "sampling/createMessage", "params": {}});
    assert_eq!(
        respond(
            &http,
            &proxy,
            &modern,
            json!({"request_id": rid, "message": ask})
        )
        .await,
        (200, json!({"status": "ok"}))
    );
    let (s, reply) = poll(&http, &proxy, &modern, 0).await;
    assert_eq!(s, 200);
    assert_eq!(reply["kind"], "reply");
    assert_eq!(reply["request_id"], rid);
    assert_eq!(reply["message"]["id"], "s-1");
    assert_eq!(reply["message"]["error"]["code"], -32601);

    let fin = json!({"request_id": rid, "response": answer});
    assert_eq!(
        respond(&http, &proxy, &modern, fin.clone()).await,
        (200, json!({"status": "ok"}))
    );
    assert_eq!(
        respond(&http, &proxy, &modern, fin.clone()).await,
        (200, json!({"status": "duplicate"}))
    );
    let (s, v) = call.await.unwrap();
    assert_eq!((s, v), (200, answer));
    // Another registration cannot answer someone else's request.
    let (s, v) = respond(&http, &proxy, &legacy, fin).await;
    assert_eq!((s, v), (200, json!({"status": "ignored"})));
    proxy.stop().await;
}
