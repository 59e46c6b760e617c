//! Session isolation, closing and idle expiry.

use std::time::Duration;

use mcp_server::{Outbound, ServerConfig};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::common::*;

fn expiring() -> ServerConfig {
    ServerConfig::new("t", "1").with_session_idle_timeout(Duration::from_secs(60))
}

#[tokio::test]
async fn closed_sessions_are_unknown() {
    let (server, _) = server();
    init(&server, "a", json!({})).await;
    init(&server, "b", json!({})).await;
    assert_eq!(server.session_count(), 2);
    assert!(server.close_session("a"));
    assert!(!server.close_session("a"));
    assert!(!server.has_session("a"));
    let r = ask(&server, Some("a"), req(1, "ping", json!({}))).await;
    assert_eq!(err_code(&r), -32001);
    let r = ask(&server, Some("b"), req(1, "ping", json!({}))).await;
    assert_eq!(ok(&r), &json!({}));
    assert_eq!(server.session_count(), 1);
    // A closed session can start again.
    init(&server, "a", json!({})).await;
    assert!(server.has_session("a"));
}

#[tokio::test]
async fn cancellation_stays_within_its_session() {
    let (server, probes) = server();
    init(&server, "a", json!({})).await;
    init(&server, "b", json!({})).await;
    let s = server.clone();
    let in_a =
        tokio::spawn(async move { ask(&s, Some("a"), call_tool(5, "slow", json!({}))).await });
    probes.started().await;
    let s = server.clone();
    let in_b =
        tokio::spawn(async move { ask(&s, Some("b"), call_tool(5, "slow", json!({}))).await });
    probes.started().await;

    // The same request id, cancelled in session b only.
    server
        .handle(
            Some("b"),
            note("notifications/cancelled", json!({"requestId": 5})),
            Outbound::none(),
        )
        .await;
    assert_eq!(err_code(&within(in_b).await.unwrap()), -32800);
    assert!(!in_a.is_finished());
    probes.release.notify_one();
    assert_eq!(text(ok(&within(in_a).await.unwrap())), "slow done");
}

#[tokio::test]
async fn log_levels_are_per_session() {
    let (server, _) = server();
    init(&server, "quiet", json!({})).await;
    init(&server, "chatty", json!({})).await;
    let r = ask(
        &server,
        Some("quiet"),
        req(1, "logging/setLevel", json!({"level": "error"})),
    )
    .await;
    ok(&r);
    for (session, expected) in [
        ("quiet", "logs sent: false false"),
        ("chatty", "logs sent: true true"),
    ] {
        let client = Client::new(&server, Some(session), |_, _| Ok(json!({})));
        let r = within(server.handle(
            Some(session),
            call_tool(2, "progress", json!({})),
            client.outbound(),
        ))
        .await
        .unwrap();
        assert!(
            text(ok(&r)).ends_with(expected),
            "{session}: {}",
            text(ok(&r))
        );
    }
}

#[tokio::test]
async fn one_session_cannot_answer_for_another() {
    let (server, _) = server();
    init(&server, "a", json!({"sampling": {}})).await;
    init(&server, "b", json!({"sampling": {}})).await;
    // Session a's client never answers; session b's client tries to answer a's request.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let s = server.clone();
    let call = tokio::spawn(async move {
        s.handle(
            Some("a"),
            call_tool(1, "sample", json!({})),
            Outbound::channel(tx),
        )
        .await
        .unwrap()
    });
    let Some(mcp_protocol::Message::Request(sent)) = within(rx.recv()).await else {
        panic!("expected a sampling request")
    };
    let answer =
        json!({"role": "assistant", "content": {"type": "text", "text": "4"}, "model": "m"});
    let forged = mcp_protocol::Response::success(sent.id.clone(), answer.clone());
    server
        .handle(
            Some("b"),
            mcp_protocol::Message::Response(forged),
            Outbound::none(),
        )
        .await;
    assert!(!call.is_finished());
    let real = mcp_protocol::Response::success(sent.id, answer);
    server
        .handle(
            Some("a"),
            mcp_protocol::Message::Response(real),
            Outbound::none(),
        )
        .await;
    let r = within(call).await.unwrap();
    assert_eq!(text(ok(&r)), "m said \"4\"");
}

#[tokio::test(start_paused = true)]
async fn idle_sessions_expire_lazily() {
    let (server, _) = server_with(expiring());
    init(&server, "a", json!({})).await;
    tokio::time::advance(Duration::from_secs(30)).await;
    ok(&ask(&server, Some("a"), req(1, "ping", json!({}))).await);
    tokio::time::advance(Duration::from_secs(45)).await;
    // Activity 45 s ago: still alive.
    ok(&ask(&server, Some("a"), req(2, "ping", json!({}))).await);
    tokio::time::advance(Duration::from_secs(61)).await;
    let r = ask(&server, Some("a"), req(3, "ping", json!({}))).await;
    assert_eq!(err_code(&r), -32001);
    assert_eq!(server.session_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_session_with_a_running_request_is_not_idle() {
    let (server, probes) = server_with(expiring());
    init(&server, "a", json!({})).await;
    let s = server.clone();
    let slow =
        tokio::spawn(async move { ask(&s, Some("a"), call_tool(1, "slow", json!({}))).await });
    probes.started().await;
    tokio::time::advance(Duration::from_secs(120)).await;
    assert_eq!(server.sweep_idle(), 0);
    probes.release.notify_one();
    ok(&within(slow).await.unwrap());
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(server.sweep_idle(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_expiry_task_sweeps_until_cancelled() {
    let (server, _) = server_with(expiring());
    init(&server, "a", json!({})).await;
    init(&server, "b", json!({})).await;
    let stop = CancellationToken::new();
    let task = server.spawn_expiry_task(stop.clone());
    // Paused time auto-advances while every task waits: the task's ticks drive the sweep.
    // (Virtual time: these sleeps cost nothing and only let the clock reach the expiry.)
    for _ in 0..100 {
        if server.session_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    assert_eq!(server.session_count(), 0);
    stop.cancel();
    within(task).await.unwrap();
}

#[tokio::test]
async fn the_session_limit_is_enforced() {
    let (server, _) = server_with(ServerConfig::new("t", "1").with_max_sessions(1));
    init(&server, "a", json!({})).await;
    let r = ask(
        &server,
        Some("b"),
        req(
            1,
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {}}),
        ),
    )
    .await;
    assert_eq!(err_code(&r), -32603);
    assert!(r.as_error().unwrap().message.contains("too many"));
    // Re-initializing a known session is fine.
    init(&server, "a", json!({})).await;
}
