//! Handlers run concurrently; cancellation stops the right one.

use mcp_server::Outbound;
use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_tool_does_not_block_ping_or_other_calls() {
    let (server, probes) = server();
    let s = server.clone();
    let slow = tokio::spawn(async move { ask(&s, None, call_tool(1, "slow", json!({}))).await });
    assert_eq!(probes.started().await, json!(1));

    let r = ask(&server, None, req(2, "ping", json!({}))).await;
    assert_eq!(ok(&r), &json!({}));
    let r = ask(
        &server,
        None,
        call_tool(3, "echo", json!({"text": "meanwhile"})),
    )
    .await;
    assert_eq!(text(ok(&r)), "meanwhile");
    assert!(!slow.is_finished());

    probes.release.notify_one();
    let r = within(slow).await.unwrap();
    assert_eq!(text(ok(&r)), "slow done");
}

#[tokio::test]
async fn many_slow_calls_run_at_once() {
    let (server, probes) = server();
    let mut calls = Vec::new();
    for id in 0..8 {
        let s = server.clone();
        calls.push(tokio::spawn(async move {
            ask(&s, None, call_tool(id, "slow", json!({}))).await
        }));
    }
    for _ in 0..8 {
        probes.started().await;
    }
    for _ in 0..8 {
        probes.release.notify_one();
    }
    for call in calls {
        let r = within(call).await.unwrap();
        assert_eq!(text(ok(&r)), "slow done");
    }
}

#[tokio::test]
async fn notifications_cancelled_cancels_the_running_handler() {
    let (server, probes) = server();
    init(&server, "s", json!({})).await;
    let s = server.clone();
    let slow =
        tokio::spawn(async move { ask(&s, Some("s"), call_tool(7, "slow", json!({}))).await });
    probes.started().await;

    let none = server
        .handle(
            Some("s"),
            note(
                "notifications/cancelled",
                json!({"requestId": 7, "reason": "user"}),
            ),
            Outbound::none(),
        )
        .await;
    assert!(none.is_none());
    let r = within(slow).await.unwrap();
    assert_eq!(err_code(&r), -32800);
    assert_eq!(r.id, Some(7.into()));
}

#[tokio::test]
async fn the_handler_sees_its_cancellation() {
    let (server, probes) = server();
    let s = server.clone();
    // A sessionless request, cancelled sessionless.
    let slow = tokio::spawn(async move { ask(&s, None, call_tool(9, "slow", json!({}))).await });
    probes.started().await;
    // Cancelling an id that is not running, or in another session, changes nothing.
    server
        .handle(
            None,
            note("notifications/cancelled", json!({"requestId": 10})),
            Outbound::none(),
        )
        .await;
    assert!(!slow.is_finished());
    server
        .handle(
            None,
            note("notifications/cancelled", json!({"requestId": 9})),
            Outbound::none(),
        )
        .await;
    assert_eq!(probes.cancelled().await, json!(9));
    let r = within(slow).await.unwrap();
    assert_eq!(err_code(&r), -32800);
}

#[tokio::test]
async fn closing_the_session_cancels_its_running_requests() {
    let (server, probes) = server();
    init(&server, "s", json!({})).await;
    let s = server.clone();
    let slow =
        tokio::spawn(async move { ask(&s, Some("s"), call_tool(1, "slow", json!({}))).await });
    probes.started().await;
    assert!(server.close_session("s"));
    assert_eq!(probes.cancelled().await, json!(1));
    let r = within(slow).await.unwrap();
    assert_eq!(err_code(&r), -32800);
}

#[tokio::test]
async fn dropping_the_handle_future_abandons_the_request() {
    let (server, probes) = server();
    let s = server.clone();
    let slow = tokio::spawn(async move { ask(&s, None, call_tool(1, "slow", json!({}))).await });
    probes.started().await;
    slow.abort();
    assert!(within(slow).await.unwrap_err().is_cancelled());
    // The request left the in-flight table: the same id can run again and be cancelled.
    let s = server.clone();
    let again = tokio::spawn(async move { ask(&s, None, call_tool(1, "slow", json!({}))).await });
    probes.started().await;
    server
        .handle(
            None,
            note("notifications/cancelled", json!({"requestId": 1})),
            Outbound::none(),
        )
        .await;
    assert_eq!(err_code(&within(again).await.unwrap()), -32800);
}
