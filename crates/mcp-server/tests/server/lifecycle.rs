//! `initialize`, `notifications/initialized`, `ping`, unknown methods, the handshake rule.

use mcp_server::Outbound;
use serde_json::json;

use crate::common::*;

fn initialize(version: &str) -> mcp_protocol::Message {
    req(
        1,
        "initialize",
        json!({
            "protocolVersion": version,
            "capabilities": {},
            "clientInfo": {"name": "c", "version": "1"}
        }),
    )
}

#[tokio::test]
async fn initialize_keeps_a_supported_client_version() {
    let (server, _) = server();
    let r = ask(&server, Some("s1"), initialize("2025-06-18")).await;
    let result = ok(&r);
    assert_eq!(result["protocolVersion"], "2025-06-18");
    assert_eq!(
        result["serverInfo"],
        json!({"name": "test-server", "version": "0.0.1"})
    );
    assert_eq!(result["instructions"], "Use the tools.");
    assert_eq!(
        result["capabilities"]["tools"],
        json!({"listChanged": true})
    );
    assert_eq!(result["capabilities"]["logging"], json!({}));
    assert!(result["capabilities"].get("prompts").is_none());
    assert_eq!(server.session_count(), 1);
}

#[tokio::test]
async fn initialize_answers_2025_11_25_for_unsupported_versions() {
    let (server, _) = server();
    for (session, version) in [
        ("a", "1999-01-01"),
        ("b", "2026-07-28"),
        ("c", "2030-01-01"),
    ] {
        let r = ask(&server, Some(session), initialize(version)).await;
        assert_eq!(ok(&r)["protocolVersion"], "2025-11-25", "for {version}");
    }
}

#[tokio::test]
async fn initialize_without_a_version_is_invalid_params() {
    let (server, _) = server();
    let r = ask(
        &server,
        Some("s"),
        req(1, "initialize", json!({"capabilities": {}})),
    )
    .await;
    assert_eq!(err_code(&r), -32602);
    assert_eq!(
        server.session_count(),
        0,
        "a failed initialize creates no session"
    );
}

#[tokio::test]
async fn requests_before_initialize_get_the_unknown_session_error() {
    let (server, _) = server();
    for method in ["tools/list", "ping", "notifications/initialized"] {
        let r = ask(
            &server,
            Some("never-initialized"),
            req(2, method, json!({})),
        )
        .await;
        let e = r.as_error().expect("an error");
        assert_eq!(e.code.0, -32001, "{method}");
        assert_eq!(e.message, "unknown session");
        assert!(e.data.as_ref().unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("initialize"));
    }
}

#[tokio::test]
async fn initialized_with_an_id_is_answered_with_an_empty_object() {
    let (server, _) = server();
    // The seed's client: sessionless, and notifications/initialized carries an id.
    let r = ask(&server, None, initialize("2024-11-05")).await;
    assert_eq!(ok(&r)["protocolVersion"], "2024-11-05");
    let r = ask(
        &server,
        None,
        req(2, "notifications/initialized", json!({})),
    )
    .await;
    assert_eq!(ok(&r), &json!({}));
    assert!(server.is_session_ready(None));
}

#[tokio::test]
async fn initialized_notification_marks_the_session_ready() {
    let (server, _) = server();
    ask(&server, Some("s"), initialize("2025-11-25")).await;
    assert!(!server.is_session_ready(Some("s")));
    let none = server
        .handle(
            Some("s"),
            note("notifications/initialized", json!({})),
            Outbound::none(),
        )
        .await;
    assert!(none.is_none());
    assert!(server.is_session_ready(Some("s")));
}

#[tokio::test]
async fn sessionless_requests_need_no_handshake() {
    let (server, _) = server();
    let r = ask(&server, None, req(1, "tools/list", json!({}))).await;
    assert!(!ok(&r)["tools"].as_array().unwrap().is_empty());
    let r = ask(
        &server,
        None,
        call_tool(
            2,
            "echo",
            json!({"text": "Hello from reverse proxy!", "uppercase": true}),
        ),
    )
    .await;
    assert_eq!(text(ok(&r)), "HELLO FROM REVERSE PROXY!");
    assert_eq!(
        server.session_count(),
        0,
        "sessionless traffic is not a client session"
    );
}

#[tokio::test]
async fn ping_and_unknown_methods() {
    let (server, _) = server();
    init(&server, "s", json!({})).await;
    let r = ask(&server, Some("s"), req(1, "ping", json!({}))).await;
    assert_eq!(ok(&r), &json!({}));
    assert_eq!(r.id, Some(1.into()));
    let r = ask(&server, Some("s"), req(2, "no/such/method", json!({}))).await;
    assert_eq!(err_code(&r), -32601);
    let r = ask(
        &server,
        Some("s"),
        req(3, "resources/subscribe", json!({"uri": "x"})),
    )
    .await;
    assert_eq!(err_code(&r), -32601);
}

#[tokio::test]
async fn set_level_validates_its_params() {
    let (server, _) = server();
    init(&server, "s", json!({})).await;
    let r = ask(
        &server,
        Some("s"),
        req(1, "logging/setLevel", json!({"level": "warning"})),
    )
    .await;
    assert_eq!(ok(&r), &json!({}));
    let r = ask(
        &server,
        Some("s"),
        req(2, "logging/setLevel", json!({"level": "loud"})),
    )
    .await;
    assert_eq!(err_code(&r), -32602);
}

#[tokio::test]
async fn unknown_notifications_and_stray_responses_are_ignored() {
    let (server, _) = server();
    let none = server
        .handle(
            None,
            note("notifications/whatever", json!({})),
            Outbound::none(),
        )
        .await;
    assert!(none.is_none());
    let stray = mcp_protocol::Response::success("nobody-asked".into(), json!({}));
    let none = server
        .handle(
            None,
            mcp_protocol::Message::Response(stray),
            Outbound::none(),
        )
        .await;
    assert!(none.is_none());
}
