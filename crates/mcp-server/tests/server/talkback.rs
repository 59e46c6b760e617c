//! Talking back to the client: progress, log messages, sampling, elicitation, roots.

use mcp_protocol::mcp::notifications::{LoggingMessageParams, ProgressParams};
use mcp_protocol::{ErrorObject, Message};
use mcp_server::Outbound;
use serde_json::{json, Value};

use crate::common::*;

fn all_capabilities() -> Value {
    json!({"sampling": {}, "elicitation": {}, "roots": {"listChanged": true}})
}

fn answer(method: &str, _params: &Value) -> Result<Value, ErrorObject> {
    match method {
        "sampling/createMessage" => Ok(json!({
            "role": "assistant",
            "content": {"type": "text", "text": "4"},
            "model": "test-model"
        })),
        "elicitation/create" => Ok(json!({"action": "accept", "content": {"name": "Ada"}})),
        "roots/list" => Ok(json!({"roots": [{"uri": "file:///a"}, {"uri": "file:///b"}]})),
        other => Err(ErrorObject::method_not_found(other)),
    }
}

async fn call_with(
    server: &mcp_server::Server,
    session: Option<&str>,
    client: &Client,
    message: Message,
) -> mcp_protocol::Response {
    within(server.handle(session, message, client.outbound()))
        .await
        .unwrap()
}

#[tokio::test]
async fn progress_and_log_notifications_reach_the_client() {
    let (server, _) = server();
    init(&server, "s", json!({})).await;
    let client = Client::new(&server, Some("s"), answer);
    let message = req(
        1,
        "tools/call",
        json!({"name": "progress", "_meta": {"progressToken": 42}}),
    );
    let r = call_with(&server, Some("s"), &client, message).await;
    assert_eq!(
        text(ok(&r)),
        "progress sent: true true, logs sent: true true"
    );

    let seen = client.messages(4).await;
    let notes: Vec<_> = seen
        .iter()
        .map(|m| match m {
            Message::Notification(n) => n.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(notes.len(), 4);
    let p: ProgressParams = notes[0].params_as().unwrap();
    assert_eq!(notes[0].method, "notifications/progress");
    assert_eq!(
        (p.progress_token, p.progress, p.total),
        (json!(42), 1.0, Some(2.0))
    );
    assert_eq!(p.message.as_deref(), Some("half"));
    let log: LoggingMessageParams = notes[3].params_as().unwrap();
    assert_eq!(notes[3].method, "notifications/message");
    assert_eq!(log.data, json!({"warn": 1}));
}

#[tokio::test]
async fn without_a_progress_token_no_progress_is_sent() {
    let (server, _) = server();
    let client = Client::new(&server, None, answer);
    let r = call_with(&server, None, &client, call_tool(1, "progress", json!({}))).await;
    assert!(text(ok(&r)).starts_with("progress sent: false false"));
    client.messages(2).await;
    assert_eq!(client.methods(), vec!["notifications/message"; 2]);
}

#[tokio::test]
async fn sampling_returns_the_clients_answer() {
    let (server, _) = server();
    init(&server, "s", all_capabilities()).await;
    let client = Client::new(&server, Some("s"), answer);
    let r = call_with(
        &server,
        Some("s"),
        &client,
        call_tool(1, "sample", json!({})),
    )
    .await;
    assert_eq!(text(ok(&r)), "test-model said \"4\"");
    let seen = client.seen.lock().unwrap().clone();
    let Message::Request(sent) = &seen[0] else {
        panic!("expected a request")
    };
    assert_eq!(sent.method, "sampling/createMessage");
    let params = sent.params.as_ref().unwrap();
    assert_eq!(params["maxTokens"], 10);
    assert_eq!(params["messages"][0]["content"]["text"], "What is 2+2?");
}

#[tokio::test]
async fn elicitation_and_roots_return_the_clients_answers() {
    let (server, _) = server();
    init(&server, "s", all_capabilities()).await;
    let client = Client::new(&server, Some("s"), answer);
    let r = call_with(&server, Some("s"), &client, call_tool(1, "ask", json!({}))).await;
    assert_eq!(text(ok(&r)), "Accept {\"name\":\"Ada\"}");
    let r = call_with(
        &server,
        Some("s"),
        &client,
        call_tool(2, "roots", json!({})),
    )
    .await;
    assert_eq!(text(ok(&r)), "file:///a,file:///b");
    assert_eq!(client.methods(), vec!["elicitation/create", "roots/list"]);
}

#[tokio::test]
async fn sessionless_clients_without_declared_capabilities_can_be_asked() {
    let (server, _) = server();
    let client = Client::new(&server, None, answer);
    let r = call_with(&server, None, &client, call_tool(1, "roots", json!({}))).await;
    assert_eq!(text(ok(&r)), "file:///a,file:///b");
}

#[tokio::test]
async fn an_unreachable_client_is_a_clear_tool_error() {
    let (server, _) = server();
    init(&server, "s", all_capabilities()).await;
    let r = within(server.handle(
        Some("s"),
        call_tool(1, "sample", json!({})),
        Outbound::none(),
    ))
    .await
    .unwrap();
    let result = ok(&r);
    assert_eq!(result["isError"], true);
    assert!(
        text(result).contains("cannot be reached"),
        "{}",
        text(result)
    );
}

#[tokio::test]
async fn a_client_without_the_capability_is_not_asked() {
    let (server, _) = server();
    init(&server, "s", json!({})).await;
    let client = Client::new(&server, Some("s"), answer);
    let r = call_with(
        &server,
        Some("s"),
        &client,
        call_tool(1, "sample", json!({})),
    )
    .await;
    assert_eq!(ok(&r)["isError"], true);
    assert!(text(ok(&r)).contains("does not support sampling"));
    assert!(client.methods().is_empty());
}

#[tokio::test]
async fn a_client_error_answer_becomes_a_tool_error() {
    let (server, _) = server();
    init(&server, "s", all_capabilities()).await;
    let client = Client::new(&server, Some("s"), |_, _| {
        Err(ErrorObject::new(
            mcp_protocol::ErrorCode(-1),
            "user rejected",
        ))
    });
    let r = call_with(
        &server,
        Some("s"),
        &client,
        call_tool(1, "sample", json!({})),
    )
    .await;
    assert_eq!(ok(&r)["isError"], true);
    assert!(text(ok(&r)).contains("user rejected"), "{}", text(ok(&r)));
}

#[tokio::test]
async fn a_malformed_client_answer_becomes_a_tool_error() {
    let (server, _) = server();
    init(&server, "s", all_capabilities()).await;
    let client = Client::new(&server, Some("s"), |_, _| Ok(json!({"nonsense": true})));
    let r = call_with(
        &server,
        Some("s"),
        &client,
        call_tool(1, "roots", json!({})),
    )
    .await;
    assert_eq!(ok(&r)["isError"], true);
    assert!(text(ok(&r)).contains("malformed"), "{}", text(ok(&r)));
}

#[tokio::test]
async fn cancelling_while_waiting_for_the_client_tells_the_client() {
    let (server, _) = server();
    init(&server, "s", all_capabilities()).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let s = server.clone();
    let call = tokio::spawn(async move {
        s.handle(
            Some("s"),
            call_tool(3, "sample", json!({})),
            Outbound::channel(tx),
        )
        .await
        .unwrap()
    });
    let Some(Message::Request(sent)) = within(rx.recv()).await else {
        panic!("expected a sampling request")
    };
    server
        .handle(
            Some("s"),
            note("notifications/cancelled", json!({"requestId": 3})),
            Outbound::none(),
        )
        .await;
    assert_eq!(err_code(&within(call).await.unwrap()), -32800);
    let Some(Message::Notification(told)) = within(rx.recv()).await else {
        panic!("expected notifications/cancelled")
    };
    assert_eq!(told.method, "notifications/cancelled");
    assert_eq!(
        told.params.unwrap()["requestId"],
        serde_json::to_value(&sent.id).unwrap()
    );
    // A late answer is ignored.
    let late = mcp_protocol::Response::success(sent.id, json!({}));
    assert!(server
        .handle(Some("s"), Message::Response(late), Outbound::none())
        .await
        .is_none());
}
