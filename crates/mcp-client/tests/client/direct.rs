//! Streamable HTTP against the real thing: `mcp-server`'s own endpoint (feature `http`) with the
//! seed's tools, in JSON and in SSE mode.

use std::sync::{Arc, Mutex};

use mcp_client::{text_of, Client, ClientOptions, Error};
use mcp_protocol::mcp::tools::CallToolResult;
use mcp_server::http::{self, HttpConfig, HttpHandle, ResponsePreference};
use mcp_server::{demo, tool_builder, Server, ServerConfig, ToolError};
use serde_json::json;

/// The seed's tools plus two that talk back while they run: `chatty` sends a log
/// notification, `pinger` pings the client and waits for its answer.
async fn start(response: ResponsePreference) -> HttpHandle {
    let server = Server::new(ServerConfig::new("Direct MCP Server", "1.0.0"));
    demo::register_seed_tools(&server, false);
    server.register_tool(tool_builder("chatty").build(), |_, ctx| async move {
        ctx.notify(
            "notifications/message",
            &json!({"level": "info", "data": "working on it"}),
        );
        Ok(CallToolResult::text("done"))
    });
    server.register_tool(tool_builder("pinger").build(), |_, ctx| async move {
        match ctx.request("ping", json!({})).await {
            Ok(_) => Ok(CallToolResult::text("the client answered")),
            Err(e) => Err(ToolError::new(format!("ping failed: {e}"))),
        }
    });
    http::start(
        server,
        "127.0.0.1:0",
        HttpConfig::default().with_response(response),
    )
    .await
    .unwrap()
}

async fn the_seed_walkthrough(response: ResponsePreference) {
    let handle = start(response).await;
    let client = Client::connect(&handle.url()).unwrap();
    let info = client.initialize().await.unwrap();
    assert_eq!(info.server_info.name, "Direct MCP Server");
    assert!(
        client.session_id().is_some(),
        "the server assigns a session"
    );
    let names: Vec<_> = client
        .list_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    for expected in ["get_time", "calculator", "echo"] {
        assert!(names.iter().any(|n| n == expected), "{names:?}");
    }
    let echo = client
        .call_tool(
            "echo",
            json!({"text": "Hello from reverse proxy!", "uppercase": true}),
        )
        .await
        .unwrap();
    assert_eq!(text_of(&echo), "HELLO FROM REVERSE PROXY!");
    client.ping().await.unwrap();
    client.close().await.unwrap();
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn seed_walkthrough_with_json_answers() {
    the_seed_walkthrough(ResponsePreference::Json).await;
}

#[tokio::test]
async fn seed_walkthrough_with_sse_answers() {
    the_seed_walkthrough(ResponsePreference::Sse).await;
}

#[tokio::test]
async fn notifications_on_the_stream_reach_the_callback_and_server_pings_are_answered() {
    let handle = start(ResponsePreference::Sse).await;
    let notes = Arc::new(Mutex::new(Vec::new()));
    let sink = notes.clone();
    let client = Client::with_options(
        &handle.url(),
        ClientOptions {
            on_notification: Some(Arc::new(move |n| sink.lock().unwrap().push(n))),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    client.initialize().await.unwrap();
    let result = client.call_tool("chatty", json!({})).await.unwrap();
    assert_eq!(text_of(&result), "done");
    let notes = notes.lock().unwrap().clone();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0].method, "notifications/message");
    assert_eq!(notes[0].params.as_ref().unwrap()["data"], "working on it");
    let result = client.call_tool("pinger", json!({})).await.unwrap();
    assert!(!result.is_error(), "{}", text_of(&result));
    assert_eq!(text_of(&result), "the client answered");
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_deleted_session_is_session_expired_and_initialize_recovers() {
    let handle = start(ResponsePreference::Adaptive).await;
    let client = Client::connect(&handle.url()).unwrap();
    client.initialize().await.unwrap();
    let session = client.session_id().unwrap();
    // Someone else ends the session (as an expiry or a restart would).
    let status = reqwest::Client::new()
        .delete(handle.url())
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "{status}");
    let err = client.list_tools().await.unwrap_err();
    assert!(matches!(err, Error::SessionExpired), "{err}");
    client.initialize().await.unwrap();
    assert_ne!(client.session_id().unwrap(), session);
    assert!(!client.list_tools().await.unwrap().is_empty());
    handle.shutdown().await.unwrap();
}
