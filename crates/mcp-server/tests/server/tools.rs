//! `tools/list` and `tools/call`: pagination, every error path, panics.

use mcp_server::ServerConfig;
use serde_json::{json, Value};

use crate::common::*;

#[tokio::test]
async fn tools_list_pages_through_every_tool_once() {
    let (server, _) = server_with(ServerConfig::new("t", "1").with_page_size(4));
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let params = match &cursor {
            Some(c) => json!({"cursor": c}),
            None => json!({}),
        };
        let r = ask(&server, None, req(pages, "tools/list", params)).await;
        let result = ok(&r);
        let tools = result["tools"].as_array().unwrap();
        assert!(tools.len() <= 4);
        names.extend(tools.iter().map(|t| t["name"].as_str().unwrap().to_owned()));
        pages += 1;
        match result.get("nextCursor").and_then(Value::as_str) {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = server.tools().into_iter().map(|t| t.name).collect();
    assert_eq!(names, expected);
    assert_eq!(pages, expected.len().div_ceil(4) as i64);
}

#[tokio::test]
async fn tools_list_shows_the_built_schema() {
    let (server, _) = server();
    let r = ask(&server, None, req(1, "tools/list", json!({}))).await;
    let calc = ok(&r)["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "calculator")
        .unwrap()
        .clone();
    assert_eq!(calc["description"], "Perform basic arithmetic operations");
    assert_eq!(calc["inputSchema"]["type"], "object");
    assert_eq!(
        calc["inputSchema"]["required"],
        json!(["operation", "a", "b"])
    );
    assert_eq!(calc["inputSchema"]["properties"]["a"]["type"], "number");
}

#[tokio::test]
async fn an_invalid_cursor_is_invalid_params() {
    let (server, _) = server();
    let r = ask(
        &server,
        None,
        req(1, "tools/list", json!({"cursor": "garbage"})),
    )
    .await;
    assert_eq!(err_code(&r), -32602);
}

#[tokio::test]
async fn calculator_adds() {
    let (server, _) = server();
    let r = ask(
        &server,
        None,
        call_tool(
            1,
            "calculator",
            json!({"operation": "add", "a": 15, "b": 27}),
        ),
    )
    .await;
    let result = ok(&r);
    assert_eq!(text(result), "42");
    assert!(result.get("isError").is_none());
}

#[tokio::test]
async fn an_unknown_tool_is_invalid_params() {
    let (server, _) = server();
    let r = ask(&server, None, call_tool(1, "nope", json!({}))).await;
    assert_eq!(err_code(&r), -32602);
    assert!(r.as_error().unwrap().message.contains("nope"));
}

#[tokio::test]
async fn malformed_call_params_are_invalid_params() {
    let (server, _) = server();
    for params in [
        json!({}),
        json!({"name": 5}),
        json!({"name": "echo", "arguments": "text"}),
    ] {
        let r = ask(&server, None, req(1, "tools/call", params.clone())).await;
        assert_eq!(err_code(&r), -32602, "{params}");
    }
}

#[tokio::test]
async fn arguments_failing_the_schema_are_a_tool_error_naming_the_field() {
    let (server, _) = server();
    let cases = [
        (
            json!({"operation": "add", "a": 1}),
            "missing required argument 'b'",
        ),
        (
            json!({"operation": "add", "a": "one", "b": 2}),
            "'a' must be a number",
        ),
        (
            json!({"operation": "power", "a": 1, "b": 2}),
            "'operation' must be one of",
        ),
    ];
    for (args, expected) in cases {
        let r = ask(&server, None, call_tool(1, "calculator", args.clone())).await;
        let result = ok(&r);
        assert_eq!(result["isError"], true, "{args}");
        assert!(text(result).contains(expected), "{args}: {}", text(result));
    }
}

#[tokio::test]
async fn a_handler_error_is_an_is_error_result() {
    let (server, _) = server();
    let r = ask(&server, None, call_tool(1, "fail", json!({}))).await;
    let result = ok(&r);
    assert_eq!(result["isError"], true);
    assert_eq!(text(result), "the disk is full");
    let r = ask(
        &server,
        None,
        call_tool(
            2,
            "calculator",
            json!({"operation": "divide", "a": 1, "b": 0}),
        ),
    )
    .await;
    assert_eq!(text(ok(&r)), "Division by zero");
}

#[tokio::test]
async fn a_panicking_handler_is_reported_and_the_server_lives_on() {
    let (server, _) = server();
    let r = ask(&server, None, call_tool(1, "panic", json!({}))).await;
    let result = ok(&r);
    assert_eq!(result["isError"], true);
    assert!(text(result).contains("internal error"), "{}", text(result));
    assert!(
        !text(result).contains("handler bug"),
        "panic details stay in the log"
    );
    let r = ask(
        &server,
        None,
        call_tool(2, "echo", json!({"text": "still here"})),
    )
    .await;
    assert_eq!(text(ok(&r)), "still here");
}

#[tokio::test]
async fn tools_can_be_replaced_and_removed() {
    let (server, _) = server();
    server.register_tool(mcp_server::tool_builder("echo"), |_a, _c| async {
        Ok(mcp_protocol::mcp::tools::CallToolResult::text("replaced"))
    });
    let r = ask(&server, None, call_tool(1, "echo", json!({}))).await;
    assert_eq!(text(ok(&r)), "replaced");
    assert!(server.remove_tool("echo"));
    let r = ask(&server, None, call_tool(2, "echo", json!({}))).await;
    assert_eq!(err_code(&r), -32602);
}

#[tokio::test]
async fn a_tool_learns_who_calls_when_the_transport_says() {
    use std::sync::Arc;

    use mcp_protocol::mcp::tools::CallToolResult;
    use mcp_server::{tool_builder, Identity, Outbound, Server};

    let server = Server::new(ServerConfig::new("t", "1"));
    server.register_tool(tool_builder("whoami"), |_args, ctx| async move {
        let who = ctx
            .identity()
            .map(|i| format!("{:?} {:?} {}", i.subject, i.client_id, i.scopes.join(" ")))
            .unwrap_or_else(|| "nobody".to_owned());
        Ok(CallToolResult::text(who))
    });
    let text = |r: &mcp_protocol::Response| ok(r)["content"][0]["text"].clone();
    let identity = Identity {
        issuer: "https://id.example".into(),
        subject: Some("alice".into()),
        client_id: Some("claude".into()),
        scopes: vec!["mcp:tools".into()],
    };
    for session in [None, Some("s")] {
        if let Some(s) = session {
            init(&server, s, json!({})).await;
        }
        let r = within(server.handle_as(
            session,
            call_tool(1, "whoami", json!({})),
            Outbound::none(),
            Some(Arc::new(identity.clone())),
        ))
        .await
        .unwrap();
        assert_eq!(text(&r), "Some(\"alice\") Some(\"claude\") mcp:tools");
        let r = ask(&server, session, call_tool(2, "whoami", json!({}))).await;
        assert_eq!(text(&r), "nobody");
    }
}
