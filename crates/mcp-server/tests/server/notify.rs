//! Messages not tied to a request, through the session sink: list changes, resource
//! subscriptions and updates, server-wide log messages (and `logging/setLevel` on them; the
//! filter of request-tied log messages is tested in `sessions`).

use std::sync::{Arc, Mutex};

use mcp_protocol::mcp::notifications::LoggingLevel;
use mcp_protocol::mcp::resources::Resource;
use mcp_protocol::mcp::tools::CallToolResult;
use mcp_protocol::Message;
use mcp_server::{prompt_builder, tool_builder, Server, ServerConfig};
use serde_json::{json, Value};

use crate::common::*;

/// What the sink delivered: (session, method, params).
type Delivered = Arc<Mutex<Vec<(String, String, Value)>>>;

/// A server whose sink records what it is given, delivering to every session but "dead".
fn server_with_sink() -> (Server, Delivered) {
    let server = Server::new(ServerConfig::new("n", "1"));
    server.register_resource(
        Resource {
            uri: "memo://a".into(),
            name: "a".into(),
            ..Default::default()
        },
        |_uri, _ctx| async move { Ok(vec![]) },
    );
    let delivered: Delivered = Arc::default();
    let log = Arc::clone(&delivered);
    server.set_session_sink(move |session, message| {
        if session == "dead" {
            return false;
        }
        let Message::Notification(n) = message else {
            panic!("only notifications go through the sink here: {message:?}")
        };
        log.lock().unwrap().push((
            session.to_owned(),
            n.method,
            n.params.unwrap_or(Value::Null),
        ));
        true
    });
    (server, delivered)
}

fn take(delivered: &Delivered) -> Vec<(String, String, Value)> {
    let mut d = std::mem::take(&mut *delivered.lock().unwrap());
    d.sort_by(|a, b| a.0.cmp(&b.0));
    d
}

fn sessions_of(d: &[(String, String, Value)], method: &str) -> Vec<String> {
    d.iter()
        .filter(|(_, m, _)| m == method)
        .map(|(s, _, _)| s.clone())
        .collect()
}

#[tokio::test]
async fn capabilities_advertise_subscribe_and_list_changed() {
    let (server, _) = server_with_sink();
    server.register_tool(tool_builder("t"), |_a, _c| async move {
        Ok(CallToolResult::text("x"))
    });
    server.register_prompt(prompt_builder("p"), |_a, _c| async move {
        Ok(mcp_protocol::mcp::prompts::GetPromptResult::default())
    });
    let result = init(&server, "s1", json!({})).await;
    let caps = &result["capabilities"];
    assert_eq!(caps["tools"], json!({"listChanged": true}));
    assert_eq!(caps["prompts"], json!({"listChanged": true}));
    assert_eq!(
        caps["resources"],
        json!({"subscribe": true, "listChanged": true})
    );
}

#[tokio::test]
async fn list_changes_reach_every_session_and_registration_sends_them() {
    let (server, delivered) = server_with_sink();
    // No session yet: nothing to tell, nothing sent.
    server.register_tool(tool_builder("early"), |_a, _c| async move {
        Ok(CallToolResult::text("x"))
    });
    assert!(take(&delivered).is_empty());

    init(&server, "s1", json!({})).await;
    init(&server, "s2", json!({})).await;
    init(&server, "dead", json!({})).await;
    assert_eq!(server.notify_tools_list_changed(), 2, "the dead one failed");
    let d = take(&delivered);
    assert_eq!(
        sessions_of(&d, "notifications/tools/list_changed"),
        ["s1", "s2"]
    );
    assert_eq!(d[0].2, Value::Null, "list_changed has no params");

    server.register_tool(tool_builder("late"), |_a, _c| async move {
        Ok(CallToolResult::text("x"))
    });
    assert_eq!(
        sessions_of(&take(&delivered), "notifications/tools/list_changed"),
        ["s1", "s2"]
    );
    assert!(server.remove_tool("late"));
    assert_eq!(take(&delivered).len(), 2);
    assert!(!server.remove_tool("late"));
    assert!(take(&delivered).is_empty(), "nothing changed, nothing sent");

    server.register_prompt(prompt_builder("p"), |_a, _c| async move {
        Ok(mcp_protocol::mcp::prompts::GetPromptResult::default())
    });
    assert_eq!(
        sessions_of(&take(&delivered), "notifications/prompts/list_changed"),
        ["s1", "s2"]
    );
    assert!(server.remove_prompt("p"));
    assert_eq!(take(&delivered).len(), 2);
    assert!(server.remove_resource("memo://a"));
    assert_eq!(
        sessions_of(&take(&delivered), "notifications/resources/list_changed"),
        ["s1", "s2"]
    );
    assert_eq!(server.notify_resources_list_changed(), 2);
    assert_eq!(server.notify_prompts_list_changed(), 2);

    // A closed session is no longer told.
    assert!(server.close_session("s2"));
    take(&delivered);
    assert_eq!(server.notify_tools_list_changed(), 1);
    assert_eq!(
        sessions_of(&take(&delivered), "notifications/tools/list_changed"),
        ["s1"]
    );
}

#[tokio::test]
async fn resource_updates_reach_subscribers_only() {
    let (server, delivered) = server_with_sink();
    init(&server, "s1", json!({})).await;
    init(&server, "s2", json!({})).await;
    let sub = |id, uri: &str| req(id, "resources/subscribe", json!({"uri": uri}));
    assert_eq!(
        ok(&ask(&server, Some("s1"), sub(1, "memo://a")).await),
        &json!({})
    );
    // Any URI may be watched, even one that does not exist yet.
    ok(&ask(&server, Some("s2"), sub(2, "memo://later")).await);
    assert_eq!(server.notify_resource_updated("memo://a"), 1);
    let d = take(&delivered);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].0, "s1");
    assert_eq!(d[0].1, "notifications/resources/updated");
    assert_eq!(d[0].2, json!({"uri": "memo://a"}));
    assert_eq!(server.notify_resource_updated("memo://nobody"), 0);

    let unsub = req(3, "resources/unsubscribe", json!({"uri": "memo://a"}));
    ok(&ask(&server, Some("s1"), unsub).await);
    assert_eq!(server.notify_resource_updated("memo://a"), 0);
    assert!(take(&delivered).is_empty());

    // Malformed params, unknown sessions and the stateless era are refused.
    let bad = req(4, "resources/subscribe", json!({"url": "memo://a"}));
    assert_eq!(err_code(&ask(&server, Some("s1"), bad).await), -32602);
    assert_eq!(
        err_code(&ask(&server, Some("nope"), sub(5, "memo://a")).await),
        -32001
    );
    let stateless = req(
        6,
        "resources/subscribe",
        json!({"uri": "memo://a", "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}
        }}),
    );
    assert_eq!(err_code(&ask(&server, None, stateless).await), -32601);
}

#[tokio::test]
async fn server_log_messages_respect_each_sessions_level() {
    let (server, delivered) = server_with_sink();
    init(&server, "quiet", json!({})).await;
    init(&server, "chatty", json!({})).await;
    let set = req(1, "logging/setLevel", json!({"level": "error"}));
    ok(&ask(&server, Some("quiet"), set).await);

    assert_eq!(server.log(LoggingLevel::Info, Some("db"), "connected"), 1);
    let d = take(&delivered);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].0, "chatty", "everything until a level is set");
    assert_eq!(d[0].1, "notifications/message");
    assert_eq!(
        d[0].2,
        json!({"level": "info", "logger": "db", "data": "connected"})
    );
    assert_eq!(
        server.log(LoggingLevel::Critical, None, json!({"disk": "full"})),
        2
    );
}

#[tokio::test]
async fn without_a_sink_nothing_is_sent_and_send_to_session_checks_the_session() {
    let server = Server::new(ServerConfig::new("n", "1"));
    init(&server, "s1", json!({})).await;
    assert_eq!(server.notify_tools_list_changed(), 0);
    let ping = Message::Notification(mcp_protocol::Notification::new("x", None));
    assert!(!server.send_to_session("s1", ping.clone()));

    let (server, delivered) = server_with_sink();
    init(&server, "s1", json!({})).await;
    assert!(server.send_to_session("s1", ping.clone()));
    assert!(!server.send_to_session("unknown", ping.clone()));
    assert_eq!(take(&delivered).len(), 1);
    server.clear_session_sink();
    assert!(!server.send_to_session("s1", ping));
}
