//! Server-to-client traffic through the tunnel on `/mcp`: progress, requests to the client
//! and their replies, session messages, cancellation by era.

use serde_json::{json, Value};

use super::common::{client, echo, test_config, wait_until, Proxy};
use super::fake::{mcp_post, open_session, FakeServer, Sse, BOTH};

/// Starts a tools/call answered as SSE; returns the stream and the server's item.
async fn streamed_call(
    proxy: &Proxy,
    server: &FakeServer,
    session: &str,
    id: Value,
) -> (Sse, Value) {
    let http = client();
    let resp = mcp_post(
        &http,
        &proxy.url("/mcp"),
        BOTH,
        Some(session),
        &echo(id, "x"),
    )
    .send()
    .await
    .unwrap();
    let mut sse = Sse::new(resp);
    sse.priming().await;
    let item = server.next_item(proxy).await;
    (sse, item)
}

/// Posts the client's answer to a server request; must be 202.
async fn client_answers(proxy: &Proxy, session: &str, answer: Value) {
    let resp = mcp_post(&client(), &proxy.url("/mcp"), BOTH, Some(session), &answer)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
}

#[tokio::test]
async fn progress_streams_before_the_final_answer() {
    let proxy = Proxy::start(test_config()).await;
    let server = FakeServer::register(&proxy, None, &["2025-11-25"]).await;
    let session = open_session(&proxy, &server).await;
    let (mut sse, item) = streamed_call(&proxy, &server, &session, json!(7)).await;
    for n in [1, 2] {
        let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress",
            "params": {"progressToken": "t", "progress": n, "total": 2}});
        let (s, v) = server
            .post(
                &proxy,
                json!({"request_id": item["request_id"], "message": progress}),
            )
            .await;
        assert_eq!((s, v), (200, json!({"status": "ok"})));
        assert_eq!(
            sse.message().await.unwrap().1,
            progress,
            "in order, before the answer"
        );
    }
    server.answer(&proxy, &item, json!({"done": true})).await;
    let (_, answer) = sse.message().await.unwrap();
    assert_eq!(
        (&answer["id"], &answer["result"]),
        (&json!(7), &json!({"done": true}))
    );
    assert!(
        sse.block().await.is_none(),
        "the stream ends with the answer"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_server_request_reaches_the_client_and_its_answer_comes_back_as_a_reply() {
    let proxy = Proxy::start(test_config()).await;
    let server = FakeServer::register(&proxy, None, &["2025-11-25"]).await;
    let session = open_session(&proxy, &server).await;
    let (mut sse, item) = streamed_call(&proxy, &server, &session, json!(1)).await;
    let sampling = json!({"jsonrpc": "2.0", "id": "s-1", "method": "sampling/createMessage",
        "params": {"messages": [], "maxTokens": 5}});
    server
        .post(
            &proxy,
            json!({"request_id": item["request_id"], "message": sampling}),
        )
        .await;
    let (_, seen) = sse.message().await.unwrap();
    assert_eq!(seen, sampling, "the server's id is kept");

    // A second pending server request with the same id is rewritten for the client...
    server
        .post(
            &proxy,
            json!({"request_id": item["request_id"], "message": sampling}),
        )
        .await;
    let (_, second) = sse.message().await.unwrap();
    assert_ne!(second["id"], json!("s-1"));
    assert_eq!(second["method"], "sampling/createMessage");

    // ...and each answer comes back to the request it belongs to, with the server's id.
    let result = |text: &str| json!({"role": "assistant", "content": {"type": "text", "text": text}, "model": "m"});
    client_answers(
        &proxy,
        &session,
        json!({"jsonrpc": "2.0", "id": second["id"], "result": result("two")}),
    )
    .await;
    client_answers(
        &proxy,
        &session,
        json!({"jsonrpc": "2.0", "id": "s-1", "result": result("one")}),
    )
    .await;
    for text in ["two", "one"] {
        let reply = server.next_item(&proxy).await;
        assert_eq!(reply["kind"], "reply");
        assert_eq!(reply["request_id"], item["request_id"]);
        assert_eq!(reply["client_session"], session.as_str());
        assert_eq!(
            reply["message"],
            json!({"jsonrpc": "2.0", "id": "s-1", "result": result(text)})
        );
    }
    // An answer nobody waits for is dropped (still 202); nothing reaches the server.
    client_answers(
        &proxy,
        &session,
        json!({"jsonrpc": "2.0", "id": "s-1", "result": {}}),
    )
    .await;
    assert!(server.queue_is_empty(&proxy).await);
    server.answer(&proxy, &item, json!({})).await;
    assert_eq!(sse.message().await.unwrap().1["id"], 1);
    proxy.stop().await;
}

#[tokio::test]
async fn json_answered_clients_get_server_requests_on_the_get_stream_or_a_refusal() {
    let proxy = Proxy::start(test_config()).await;
    let server = FakeServer::register(&proxy, None, &["2025-11-25"]).await;
    let session = open_session(&proxy, &server).await;
    let http = client();
    let url = proxy.url("/mcp");
    let roots = json!({"jsonrpc": "2.0", "id": 40, "method": "roots/list"});

    // No GET stream: the proxy refuses for the client at once.
    let call = tokio::spawn(
        mcp_post(
            &http,
            &url,
            "application/json",
            Some(&session),
            &echo(json!(1), "x"),
        )
        .send(),
    );
    let item = server.next_item(&proxy).await;
    server
        .post(
            &proxy,
            json!({"request_id": item["request_id"], "message": roots}),
        )
        .await;
    let reply = server.next_item(&proxy).await;
    assert_eq!(reply["kind"], "reply");
    assert_eq!(reply["request_id"], item["request_id"]);
    assert_eq!(reply["message"]["id"], 40);
    assert_eq!(reply["message"]["error"]["code"], -32601);
    server.answer(&proxy, &item, json!({})).await;
    assert_eq!(call.await.unwrap().unwrap().status(), 200);

    // With a GET stream open, the request travels there and the answer comes back.
    let get = http
        .get(&url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    let mut stream = Sse::new(get);
    stream.priming().await;
    let call = tokio::spawn(
        mcp_post(
            &http,
            &url,
            "application/json",
            Some(&session),
            &echo(json!(2), "x"),
        )
        .send(),
    );
    let item = server.next_item(&proxy).await;
    server
        .post(
            &proxy,
            json!({"request_id": item["request_id"], "message": roots}),
        )
        .await;
    assert_eq!(stream.message().await.unwrap().1, roots);
    client_answers(
        &proxy,
        &session,
        json!({"jsonrpc": "2.0", "id": 40, "result": {"roots": []}}),
    )
    .await;
    let reply = server.next_item(&proxy).await;
    assert_eq!(
        (
            &reply["kind"],
            &reply["request_id"],
            &reply["message"]["result"]
        ),
        (&json!("reply"), &item["request_id"], &json!({"roots": []}))
    );
    server.answer(&proxy, &item, json!({})).await;
    assert_eq!(call.await.unwrap().unwrap().status(), 200);

    // A request sent as a session message: its reply names the session as request_id.
    let ping = json!({"jsonrpc": "2.0", "id": 41, "method": "ping"});
    let (s, v) = server
        .post(&proxy, json!({"client_session": session, "message": ping}))
        .await;
    assert_eq!((s, v), (200, json!({"status": "ok"})));
    assert_eq!(stream.message().await.unwrap().1, ping);
    client_answers(
        &proxy,
        &session,
        json!({"jsonrpc": "2.0", "id": 41, "result": {}}),
    )
    .await;
    let reply = server.next_item(&proxy).await;
    assert_eq!(
        (&reply["kind"], &reply["request_id"]),
        (&json!("reply"), &json!(session))
    );
    // A session message for an ended session is ignored.
    http.delete(&url)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    let (s, v) = server
        .post(&proxy, json!({"client_session": session, "message": ping}))
        .await;
    assert_eq!((s, v), (200, json!({"status": "ignored"})));
    proxy.stop().await;
}

#[tokio::test]
async fn under_2025_11_25_a_dropped_stream_is_not_a_cancellation_and_resumes() {
    let proxy = Proxy::start(test_config()).await;
    let server = FakeServer::register(&proxy, None, &["2025-11-25"]).await;
    let session = open_session(&proxy, &server).await;
    let http = client();
    let resp = mcp_post(
        &http,
        &proxy.url("/mcp"),
        BOTH,
        Some(&session),
        &echo(json!(3), "x"),
    )
    .send()
    .await
    .unwrap();
    let mut sse = Sse::new(resp);
    let priming = sse.priming().await;
    let item = server.next_item(&proxy).await;
    drop(sse);
    wait_until("the stream to detach", || async {
        proxy.state.broker.stats().attached == 0
    })
    .await;
    assert!(server.queue_is_empty(&proxy).await, "no cancellation sent");
    // The explicit way to cancel is forwarded like any notification.
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 3, "reason": "user"}});
    let resp = mcp_post(&http, &proxy.url("/mcp"), BOTH, Some(&session), &cancel)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let forwarded = server.next_item(&proxy).await;
    assert_eq!(forwarded["request"], cancel);
    // The request is still pending: its answer is accepted and waits in the log.
    server.answer(&proxy, &item, json!({"late": true})).await;
    let resp = http
        .get(proxy.url("/mcp"))
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .header("last-event-id", &priming)
        .send()
        .await
        .unwrap();
    let mut resumed = Sse::new(resp);
    let (_, answer) = resumed.message().await.unwrap();
    assert_eq!(
        (&answer["id"], &answer["result"]),
        (&json!(3), &json!({"late": true}))
    );
    assert!(resumed.block().await.is_none());
    proxy.stop().await;
}

#[tokio::test]
async fn under_2026_07_28_closing_the_stream_cancels_at_the_server() {
    let proxy = Proxy::start(test_config()).await;
    let server = FakeServer::register(&proxy, None, &["2025-11-25", "2026-07-28"]).await;
    let http = client();
    let mut call = echo(json!("c-9"), "x");
    call["params"]["_meta"] = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                     "io.modelcontextprotocol/clientCapabilities": {}});
    let resp = http
        .post(proxy.url("/mcp"))
        .header("content-type", "application/json")
        .header("accept", BOTH)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "echo")
        .body(call.to_string())
        .send()
        .await
        .unwrap();
    // Silent past the keep-alive interval: the answer commits to SSE (without a priming
    // event: a stateless stream cannot be resumed).
    let sse = Sse::new(resp);
    let item = server.next_item(&proxy).await;
    assert!(
        item.get("client_session").is_none(),
        "stateless: no session"
    );
    assert_eq!(item["headers"]["mcp-protocol-version"], "2026-07-28");
    drop(sse);
    let cancel = server.next_item(&proxy).await;
    assert_eq!(cancel["request"]["method"], "notifications/cancelled");
    assert_eq!(cancel["request"]["params"]["requestId"], "c-9");
    assert!(cancel["request"].get("id").is_none());
    assert_eq!(cancel["headers"]["mcp-method"], "notifications/cancelled");
    // The cancelled request's late answer is refused: nobody waits for it.
    let response = json!({"jsonrpc": "2.0", "id": "c-9", "result": {}});
    let (s, v) = server
        .post(
            &proxy,
            json!({"request_id": item["request_id"], "response": response}),
        )
        .await;
    assert_eq!((s, &v["error"]), (404, &json!("unknown_request")));
    proxy.stop().await;
}
