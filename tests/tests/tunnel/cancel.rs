//! Cancellation by era, seen where it matters: the running handler's token fires.
//!
//! Under 2025-11-25 a dropped connection is not a cancellation, `notifications/cancelled` is;
//! under 2026-07-28 closing the response stream (or the JSON request's connection) cancels.

use std::sync::Arc;

use mcp_protocol::RequestId;
use mcp_server::demo;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::common::{client, recording, wait_for, Stack, DEADLINE};

/// Waits for `token` to fire within the deadline.
async fn fires(token: &CancellationToken, what: &str) {
    tokio::time::timeout(DEADLINE, token.cancelled())
        .await
        .unwrap_or_else(|_| panic!("the handler never saw its token fire: {what}"));
}

#[tokio::test]
async fn under_2025_11_25_notifications_cancelled_reaches_the_handler_and_a_drop_does_not() {
    let stack = Stack::start().await;
    let client = Arc::new(client(&stack.proxy.mcp(), Default::default()).await);

    // A call whose client goes away: under 2025-11-25 that is no cancellation.
    let dropped = {
        let client = client.clone();
        tokio::spawn(async move { client.call_tool("hold", json!({})).await })
    };
    let (first_id, first) = stack.held.call(1).await;
    dropped.abort();
    assert!(dropped.await.unwrap_err().is_cancelled());
    // A round trip through the same session and server after the drop.
    client.ping().await.unwrap();
    assert!(
        !first.is_cancelled(),
        "a dropped connection cancelled the handler"
    );

    // A call still attached: cancelled explicitly, its client gets the server's answer.
    let attached = {
        let client = client.clone();
        tokio::spawn(async move { client.call_tool("hold", json!({})).await })
    };
    let (second_id, second) = stack.held.call(2).await;
    client
        .notify(
            "notifications/cancelled",
            Some(json!({"requestId": second_id, "reason": "the test changed its mind"})),
        )
        .await
        .unwrap();
    fires(&second, "notifications/cancelled on an attached call").await;
    let answer = tokio::time::timeout(DEADLINE, attached)
        .await
        .unwrap()
        .unwrap();
    assert!(
        answer.is_err(),
        "a cancelled call has no result: {answer:?}"
    );
    assert!(!first.is_cancelled(), "only the named request is cancelled");

    // The detached one is still running, and is cancelled the same way.
    client
        .notify(
            "notifications/cancelled",
            Some(json!({"requestId": first_id})),
        )
        .await
        .unwrap();
    fires(&first, "notifications/cancelled after a dropped connection").await;
    stack.stop().await;
}

#[tokio::test]
async fn ending_the_session_cancels_its_running_handlers() {
    let stack = Stack::start().await;
    let client = Arc::new(client(&stack.proxy.mcp(), Default::default()).await);
    let call = {
        let client = client.clone();
        tokio::spawn(async move { client.call_tool("hold", json!({})).await })
    };
    let (_, token) = stack.held.call(1).await;
    // DELETE on /mcp: the proxy sends the registration `session_closed`, the server drops the
    // session and cancels what it runs.
    client.close().await.unwrap();
    fires(&token, "the session ended").await;
    let answer = tokio::time::timeout(DEADLINE, call).await.unwrap().unwrap();
    assert!(answer.is_err(), "{answer:?}");
    wait_for("the server forgetting the session", || {
        stack.server.session_count() == 0
    })
    .await;
    stack.stop().await;
}

#[tokio::test]
async fn the_demo_wait_cancel_tool_observes_its_cancellation() {
    let stack = Stack::start().await;
    let (options, notes) = recording();
    let client = Arc::new(client(&stack.proxy.mcp(), options).await);
    let call = {
        let client = client.clone();
        tokio::spawn(async move { client.call_tool("wait_cancel", json!({})).await })
    };
    // The tool says it runs, and under which id, in a log message on the call's stream.
    let started = || {
        notes.lock().unwrap().iter().find_map(|n| {
            let data = &n.params.as_ref()?["data"];
            (data["message"] == "wait_cancel started").then(|| data["requestId"].clone())
        })
    };
    wait_for("wait_cancel's start message", || started().is_some()).await;
    let id: RequestId = serde_json::from_value(started().unwrap()).unwrap();
    let before = demo::wait_cancel_observed();
    client
        .notify("notifications/cancelled", Some(json!({"requestId": id})))
        .await
        .unwrap();
    let answer = tokio::time::timeout(DEADLINE, call).await.unwrap().unwrap();
    assert!(answer.is_err(), "{answer:?}");
    // Only this test runs wait_cancel in this process.
    wait_for("wait_cancel observing its cancellation", || {
        demo::wait_cancel_observed() > before
    })
    .await;
    stack.stop().await;
}

/// A 2026-07-28 (stateless) `tools/call` of `hold` with id `id`, wanting info logs so that
/// the tool's first message commits the proxy to an SSE answer when `accept` allows one.
fn stateless_call(
    http: &reqwest::Client,
    url: &str,
    id: &str,
    accept: &str,
) -> reqwest::RequestBuilder {
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "hold", "arguments": {}, "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/logLevel": "info"}}});
    http.post(url)
        .header("accept", accept)
        .header("content-type", "application/json")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "hold")
        .body(body.to_string())
}

#[tokio::test]
async fn under_2026_07_28_closing_the_response_stream_cancels_the_handler() {
    let stack = Stack::start().await;
    let http = reqwest::Client::new();

    // An SSE answer carrying the tool's log line: closing the stream cancels the handler.
    let mut stream = stateless_call(
        &http,
        &stack.proxy.mcp(),
        "c-1",
        "application/json, text/event-stream",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut seen = String::new();
    while !seen.contains("hold started") {
        let chunk = tokio::time::timeout(DEADLINE, stream.chunk())
            .await
            .unwrap()
            .unwrap()
            .expect("the stream ended before the log line");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let (id, token) = stack.held.call(1).await;
    assert_eq!(id, RequestId::from("c-1"));
    assert!(!token.is_cancelled());
    drop(stream);
    fires(&token, "the SSE response stream closed").await;

    // A JSON answer: closing the request's connection before the answer cancels too.
    let pending = {
        let request = stateless_call(&http, &stack.proxy.mcp(), "c-2", "application/json");
        tokio::spawn(async move { request.send().await.map(|r| r.status()) })
    };
    let (id, token) = stack.held.call(2).await;
    assert_eq!(id, RequestId::from("c-2"));
    pending.abort();
    fires(&token, "the JSON request's connection closed").await;
    stack.stop().await;
}
