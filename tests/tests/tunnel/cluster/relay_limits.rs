//! What a relay holds is bounded: a stream nobody reads is cut off (and cancelled at its
//! home) instead of buffered without limit, and a frame larger than the body limit allows is
//! neither sent nor taken.

use std::time::Duration;

use mcp_protocol::mcp::notifications::LoggingLevel;
use mcp_protocol::mcp::tools::CallToolResult;
use mcp_proxy::Config;
use mcp_reverse::{ReverseClient, ReverseHandle};
use mcp_server::{demo, tool_builder, Server, ServerConfig, ToolError};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::{echo_eventually, Node, Redis};
use crate::common::DEADLINE;

/// A reverse client through `url` serving the demo tools and two of this file's own:
/// `flood` sends log lines of 128 KiB (at most 400) until cancelled, then cancels `seen`;
/// `big` answers with `{"bytes": N}` bytes of text.
fn serve_floods(url: &str, seen: CancellationToken) -> ReverseHandle {
    let server = Server::new(ServerConfig::new("cluster-limits", "1.0.0"));
    demo::register_seed_tools(&server, false);
    server.register_tool(tool_builder("flood").build(), move |_args, ctx| {
        let seen = seen.clone();
        async move {
            // The server drops a cancelled handler: its token tells the test.
            let token = ctx.cancellation_token().clone();
            tokio::spawn(async move {
                token.cancelled().await;
                seen.cancel();
            });
            let line = "x".repeat(128 * 1024);
            for _ in 0..400 {
                if ctx.is_cancelled() {
                    break;
                }
                ctx.log(LoggingLevel::Info, line.clone());
                tokio::task::yield_now().await;
            }
            ctx.cancelled().await;
            Err::<CallToolResult, _>(ToolError::new("cancelled"))
        }
    });
    server.register_tool(
        tool_builder("big")
            .with_number_param("bytes", "How many bytes of text", true)
            .build(),
        |args, _ctx| async move {
            let n = args.get("bytes").and_then(Value::as_u64).unwrap_or(0) as usize;
            Ok(CallToolResult::text("y".repeat(n)))
        },
    );
    let mut config = mcp_reverse::Configuration::new(url).with_held_polls(2);
    config.retry_delay_seconds = 1;
    config.shutdown_grace = Duration::from_secs(2);
    ReverseClient::new(server, config).unwrap().spawn()
}

/// The body of a 2026-07-28 (stateless) `tools/call` of `name`, wanting info logs.
fn stateless_call(name: &str, arguments: Value) -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": name, "arguments": arguments, "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/logLevel": "info"}}})
    .to_string()
}

/// `name`'s value in `node`'s `/metrics`.
async fn metric(node: &Node, name: &str) -> u64 {
    let text = reqwest::get(format!("{}/metrics", node.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[tokio::test]
async fn a_relayed_stream_nobody_reads_is_cut_off_and_cancelled_at_its_home() {
    let redis = Redis::start();
    let a = Node::start(&redis).await;
    let b = Node::start(&redis).await;
    // The server registers through A, so A is home to the default pool.
    let seen = CancellationToken::new();
    let reverse = serve_floods(&a.url, seen.clone());
    assert_eq!(echo_eventually(&a.url, "ready").await, "ready");

    // A client of B that asks for the flood and never reads its answer: a small receive
    // buffer, and the connection stays open (no disconnect cancels anything).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stuck = socket
        .connect(b.url.trim_start_matches("http://").parse().unwrap())
        .await
        .unwrap();
    let body = stateless_call("flood", json!({}));
    let request = format!(
        "POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         accept: application/json, text/event-stream\r\nmcp-protocol-version: 2026-07-28\r\n\
         mcp-method: tools/call\r\nmcp-name: flood\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stuck.write_all(request.as_bytes()).await.unwrap();

    // B's buffer for it fills: B drops the relay and tells A, which stops serving it as if
    // the client had left; under 2026-07-28 that cancels the tool.
    tokio::time::timeout(DEADLINE, seen.cancelled())
        .await
        .expect("the unread stream was never cut off (buffered without limit?)");
    assert!(metric(&b, "mcp_proxy_relays_failed_total").await >= 1);
    // Nobody else waited on it: B relays other calls as before.
    assert_eq!(echo_eventually(&b.url, "after").await, "after");
    drop(stuck);
    reverse.shutdown().await.unwrap();
}

#[tokio::test]
async fn request_headers_too_large_to_relay_get_431_at_the_instance_reached() {
    let redis = Redis::start();
    let a = Node::start(&redis).await;
    let b = Node::start(&redis).await;
    let reverse = serve_floods(&a.url, CancellationToken::new());
    assert_eq!(echo_eventually(&a.url, "ready").await, "ready");
    let ping = br#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#.to_vec();
    let send = |node: &Node, pad: usize| {
        reqwest::Client::new()
            .post(format!("{}/message", node.url))
            .header("content-type", "application/json")
            .header("x-pad", "p".repeat(pad))
            .body(ping.clone())
            .send()
    };
    // 70 KB of headers: more than a relay frame's head takes (64 KiB). B cannot relay them
    // and says so; the home, A, serves them itself.
    let refused = send(&b, 70_000).await.unwrap();
    assert_eq!(refused.status(), 431);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["id"], 7, "{body}");
    assert_eq!(body["error"]["code"], -32600, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("headers too large to relay"), "{message}");
    assert_eq!(send(&a, 70_000).await.unwrap().status(), 200);
    // Ordinary headers go through B as before.
    assert_eq!(send(&b, 100).await.unwrap().status(), 200);
    reverse.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_answer_larger_than_an_instance_takes_fails_clearly_there() {
    let redis = Redis::start();
    // A (the home) takes bodies of 1 MiB, B only 32 KiB: A's answers of more cannot reach B
    // (a cluster must run one --max-body-bytes; this is what happens when it does not).
    let a = Node::start_with(&redis, |c: &mut Config| c.max_body_bytes = 1 << 20).await;
    let b = Node::start_with(&redis, |c: &mut Config| c.max_body_bytes = 32 * 1024).await;
    let reverse = serve_floods(&a.url, CancellationToken::new());
    assert_eq!(echo_eventually(&a.url, "ready").await, "ready");
    let call = |node: &Node, bytes: usize| {
        let body = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                          "params": {"name": "big", "arguments": {"bytes": bytes}}});
        reqwest::Client::new()
            .post(format!("{}/message", node.url))
            .json(&body)
            .send()
    };
    let fits = call(&b, 1000).await.unwrap();
    assert_eq!(fits.status(), 200);
    // 200 KB of answer: B drops the frame unparsed and fails the call at once.
    let refused = tokio::time::timeout(DEADLINE, call(&b, 200_000))
        .await
        .expect("a dropped frame left the caller waiting")
        .unwrap();
    assert_eq!(refused.status(), 502);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["id"], 3);
    assert_eq!(body["error"]["code"], -32603, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("--max-body-bytes"), "{message}");
    // The home itself answers it, and B carries on.
    assert_eq!(call(&a, 200_000).await.unwrap().status(), 200);
    assert_eq!(call(&b, 1000).await.unwrap().status(), 200);
    reverse.shutdown().await.unwrap();
}
