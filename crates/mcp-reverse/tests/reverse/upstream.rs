//! The upstream bridge against a real local Streamable HTTP MCP server: an mcp_server::Server
//! behind a small axum endpoint in this test (answers as SSE, sessions by Mcp-Session-Id).

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::post;
use axum::Router;
use mcp_client::{text_of, Client};
use mcp_protocol::jsonrpc::{Message, Outcome, Request, RequestId, Response};
use mcp_protocol::mcp::client_requests::CreateMessageParams;
use mcp_protocol::mcp::tools::CallToolResult;
use mcp_protocol::streamable::{sse_event, SESSION_ID_HEADER};
use mcp_reverse::bridge::{UpstreamBridge, UpstreamConfig};
use mcp_reverse::{ReverseClient, Service};
use mcp_server::{tool_builder, Outbound, Server, ServerConfig, ToolError};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::common::{config, Proxy, DEADLINE};

/// The local HTTP MCP server.
#[derive(Clone)]
struct Upstream {
    server: Server,
    sessions: Arc<Mutex<HashSet<String>>>,
    minted: Arc<AtomicUsize>,
    deletes: Arc<AtomicUsize>,
}

impl Upstream {
    async fn start() -> (Upstream, String, CancellationToken) {
        let server = Server::new(ServerConfig::new("upstream-fixture", "1.0.0"));
        server.register_tool(
            tool_builder("echo")
                .with_string_param("text", "Text", true)
                .build(),
            |args, _ctx| async move {
                Ok(CallToolResult::text(
                    args["text"].as_str().unwrap_or_default().to_owned(),
                ))
            },
        );
        server.register_tool(tool_builder("progress").build(), |_args, ctx| async move {
            ctx.progress(1.0, Some(2.0), None);
            Ok::<_, ToolError>(CallToolResult::text("done"))
        });
        server.register_tool(tool_builder("ask").build(), |_args, ctx| async move {
            let params: CreateMessageParams = serde_json::from_value(json!({
                "messages": [{"role": "user", "content": {"type": "text", "text": "ping?"}}],
                "maxTokens": 5,
            }))
            .unwrap();
            let answer = ctx
                .create_message(params)
                .await
                .map_err(|e| ToolError::new(e.to_string()))?;
            let answer = serde_json::to_value(answer).unwrap();
            Ok(CallToolResult::text(
                answer["content"]["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ))
        });
        let upstream = Upstream {
            server,
            sessions: Arc::default(),
            minted: Arc::default(),
            deletes: Arc::default(),
        };
        let app = Router::new()
            .route("/mcp", post(on_post).delete(on_delete))
            .with_state(upstream.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
        });
        (upstream, url, stop)
    }
}

async fn on_post(State(up): State<Upstream>, headers: HeaderMap, body: Bytes) -> HttpResponse {
    let Ok(message) = Message::parse(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let session = headers
        .get(SESSION_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if message.method() == Some("initialize") {
        let sid = format!("u-{}", up.minted.fetch_add(1, Ordering::SeqCst));
        up.sessions.lock().unwrap().insert(sid.clone());
        let answer = up
            .server
            .handle(Some(&sid), message, Outbound::none())
            .await;
        return ([(SESSION_ID_HEADER, sid)], axum::Json(answer)).into_response();
    }
    let Some(sid) = session.filter(|s| up.sessions.lock().unwrap().contains(s)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !matches!(message, Message::Request(_)) {
        up.server
            .handle(Some(&sid), message, Outbound::none())
            .await;
        return StatusCode::ACCEPTED.into_response();
    }
    // A request: answer as an SSE stream, its interim messages first.
    let (tx, rx) = mpsc::unbounded_channel::<Message>();
    let server = up.server.clone();
    tokio::spawn(async move {
        if let Some(answer) = server
            .handle(Some(&sid), message, Outbound::channel(tx.clone()))
            .await
        {
            let _ = tx.send(Message::Response(answer));
        }
    });
    let stream = futures::stream::unfold((rx, false), |(mut rx, done)| async move {
        if done {
            return None;
        }
        let message = rx.recv().await?;
        let last = matches!(message, Message::Response(_));
        let event = sse_event(None, &serde_json::to_string(&message).unwrap());
        Some((Ok::<_, Infallible>(Bytes::from(event)), (rx, last)))
    });
    (
        [("content-type", "text/event-stream")],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn on_delete(State(up): State<Upstream>, headers: HeaderMap) -> StatusCode {
    let session = headers
        .get(SESSION_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if up.sessions.lock().unwrap().remove(session) {
        up.server.close_session(session);
        up.deletes.fetch_add(1, Ordering::SeqCst);
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn call(
    bridge: &UpstreamBridge,
    session: Option<&str>,
    id: i64,
    method: &str,
    params: Value,
    outbound: Outbound,
) -> Response {
    let message = Message::Request(Request::new(id, method, Some(params)));
    tokio::time::timeout(DEADLINE, bridge.handle(session, message, outbound))
        .await
        .expect("answered in time")
        .expect("a request gets an answer")
}

fn text(response: &Response) -> String {
    match &response.outcome {
        Outcome::Result(r) => r["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        Outcome::Error(e) => panic!("error {}: {}", e.code.0, e.message),
    }
}

fn initialize_params() -> Value {
    json!({"protocolVersion": "2025-11-25", "capabilities": {"sampling": {}}, "clientInfo": {"name": "t", "version": "1"}})
}

/// The fixture's tools on mcp-server's own Streamable HTTP endpoint (feature `http`).
async fn real_http_server() -> (Server, mcp_server::http::HttpHandle) {
    let (upstream, _url, stop) = Upstream::start().await;
    stop.cancel();
    let handle = mcp_server::http::start(
        upstream.server.clone(),
        "127.0.0.1:0",
        mcp_server::http::HttpConfig::default(),
    )
    .await
    .unwrap();
    (upstream.server, handle)
}

#[tokio::test]
async fn an_http_server_is_published_through_the_proxy() {
    let (_server, http) = real_http_server().await;
    let proxy = Proxy::start().await;
    let bridge = UpstreamBridge::new(UpstreamConfig::new(http.url())).unwrap();
    let reverse = ReverseClient::with_service(bridge, config(&proxy.url()))
        .unwrap()
        .spawn();
    proxy.wait_registrations(1).await;

    let client = Client::connect(&proxy.url()).unwrap();
    let info = client.initialize().await.unwrap();
    assert_eq!(info.server_info.name, "upstream-fixture");
    assert_eq!(client.list_tools().await.unwrap().len(), 3);
    // Ten clients numbering their requests from 1 share the sessionless upstream session.
    let calls: Vec<_> = (0..10)
        .map(|i| {
            let url = proxy.url();
            tokio::spawn(async move {
                let answer = Client::connect(&url)
                    .unwrap()
                    .call_tool("echo", json!({"text": format!("call {i}")}))
                    .await
                    .unwrap();
                (i, text_of(&answer))
            })
        })
        .collect();
    for c in calls {
        let (i, answer) = c.await.unwrap();
        assert_eq!(answer, format!("call {i}"));
    }

    reverse.shutdown().await.unwrap();
    proxy.stop().await;
    http.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_upstream_get_stream_becomes_session_messages() {
    let (server, http) = real_http_server().await;
    let bridge = UpstreamBridge::new(UpstreamConfig::new(http.url())).unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    bridge.set_session_sink(Arc::new(move |session: &str, message: Message| {
        tx.send((session.to_owned(), message)).is_ok()
    }));
    let answer = call(
        &bridge,
        Some("a"),
        1,
        "initialize",
        initialize_params(),
        Outbound::none(),
    )
    .await;
    assert!(answer.as_result().is_some(), "{answer:?}");
    // The bridge opens the GET stream in the background: notify until it carries one.
    let start = Instant::now();
    let (session, message) = loop {
        server.notify_tools_list_changed();
        if let Ok(Some(got)) =
            tokio::time::timeout(std::time::Duration::from_millis(50), rx.recv()).await
        {
            break got;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "nothing came through the GET stream"
        );
    };
    assert_eq!(session, "a");
    assert_eq!(message.method(), Some("notifications/tools/list_changed"));

    // Closing the client session deletes the upstream one.
    assert_eq!(server.session_count(), 1);
    bridge.close_session("a");
    let start = Instant::now();
    while server.session_count() != 0 {
        assert!(start.elapsed() < DEADLINE, "never deleted");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    http.shutdown().await.unwrap();
}

#[tokio::test]
async fn each_client_session_gets_its_own_upstream_session() {
    let (upstream, url, stop) = Upstream::start().await;
    let bridge = UpstreamBridge::new(UpstreamConfig::new(&url)).unwrap();
    for session in ["a", "b"] {
        let answer = call(
            &bridge,
            Some(session),
            1,
            "initialize",
            initialize_params(),
            Outbound::none(),
        )
        .await;
        assert_eq!(answer.id, Some(RequestId::from(1)));
        assert!(answer.as_result().is_some(), "{answer:?}");
    }
    assert_eq!(upstream.sessions.lock().unwrap().len(), 2);

    // SSE: the progress notification comes first, as an interim message, then the answer.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let params = json!({"name": "progress", "arguments": {}, "_meta": {"progressToken": "p"}});
    let answer = call(
        &bridge,
        Some("a"),
        7,
        "tools/call",
        params,
        Outbound::channel(tx),
    )
    .await;
    assert_eq!(answer.id, Some(RequestId::from(7)));
    assert_eq!(text(&answer), "done");
    let Ok(Message::Notification(progress)) = rx.try_recv() else {
        panic!("no progress")
    };
    assert_eq!(progress.params.unwrap()["progressToken"], "p");

    // A request of the upstream to the client travels on the stream; the answer goes back.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let ask = {
        let bridge = bridge.clone();
        tokio::spawn(async move {
            call(
                &bridge,
                Some("b"),
                8,
                "tools/call",
                json!({"name": "ask"}),
                Outbound::channel(tx),
            )
            .await
        })
    };
    let Some(Message::Request(asked)) = tokio::time::timeout(DEADLINE, rx.recv()).await.unwrap()
    else {
        panic!("no request to the client")
    };
    assert_eq!(asked.method, "sampling/createMessage");
    let reply = Response::success(
        asked.id,
        json!({"role": "assistant", "model": "m", "content": {"type": "text", "text": "pong"}}),
    );
    bridge
        .handle(Some("b"), Message::Response(reply), Outbound::none())
        .await;
    assert_eq!(text(&ask.await.unwrap()), "pong");

    // The upstream forgets session b: its client must initialize again (-32001, which the
    // proxy turns into 404).
    upstream.sessions.lock().unwrap().clear();
    let answer = call(&bridge, Some("b"), 9, "ping", json!({}), Outbound::none()).await;
    assert_eq!(answer.as_error().map(|e| e.code.0), Some(-32001));
    // Sessionless traffic gets a new upstream session without noticing.
    call(&bridge, None, 1, "ping", json!({}), Outbound::none()).await;
    upstream.sessions.lock().unwrap().clear();
    let answer = call(
        &bridge,
        None,
        2,
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "again"}}),
        Outbound::none(),
    )
    .await;
    assert_eq!(text(&answer), "again");

    // Closing a client session deletes its upstream session.
    let answer = call(
        &bridge,
        Some("c"),
        1,
        "initialize",
        initialize_params(),
        Outbound::none(),
    )
    .await;
    assert!(answer.as_result().is_some());
    bridge.close_session("c");
    let start = Instant::now();
    while upstream.deletes.load(Ordering::SeqCst) != 1 {
        assert!(start.elapsed() < DEADLINE, "never deleted");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    stop.cancel();
}

#[tokio::test]
async fn a_request_that_comes_after_its_sessions_close_opens_no_upstream_session() {
    let (upstream, url, stop) = Upstream::start().await;
    let bridge = UpstreamBridge::new(UpstreamConfig::new(&url)).unwrap();
    let answer = call(
        &bridge,
        Some("live"),
        1,
        "initialize",
        initialize_params(),
        Outbound::none(),
    )
    .await;
    assert!(answer.as_result().is_some(), "{answer:?}");
    bridge.close_session("live");
    // Several polls are held at once: `session_closed` may overtake its session's request.
    bridge.close_session("late");
    for session in ["late", "live"] {
        for (id, method, params) in [
            (1, "initialize", initialize_params()),
            (2, "ping", json!({})),
        ] {
            let answer = call(&bridge, Some(session), id, method, params, Outbound::none()).await;
            let error = answer.as_error().expect("refused");
            assert_eq!(error.code.0, -32001, "{session} {method}: unknown session");
            assert_eq!(answer.id, Some(RequestId::from(id)), "the client's own id");
        }
    }
    let start = Instant::now();
    while upstream.deletes.load(Ordering::SeqCst) != 1 {
        assert!(
            start.elapsed() < DEADLINE,
            "the live session was never deleted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        upstream.minted.load(Ordering::SeqCst),
        1,
        "no upstream session opened"
    );
    assert!(upstream.sessions.lock().unwrap().is_empty());
    // Other sessions are served as before.
    let answer = call(
        &bridge,
        Some("other"),
        1,
        "initialize",
        initialize_params(),
        Outbound::none(),
    )
    .await;
    assert!(answer.as_result().is_some(), "{answer:?}");
    stop.cancel();
}

#[tokio::test]
async fn registering_again_deletes_the_upstream_sessions_of_the_lost_registration() {
    let (upstream, url, stop) = Upstream::start().await;
    let mut proxy = Proxy::start().await;
    let bridge = UpstreamBridge::new(UpstreamConfig::new(&url)).unwrap();
    let reverse = ReverseClient::with_service(bridge, config(&proxy.url()))
        .unwrap()
        .spawn();
    proxy.wait_registrations(1).await;

    let client = Client::connect(&format!("{}/mcp", proxy.url())).unwrap();
    client.initialize().await.unwrap();
    let answer = client
        .call_tool("echo", json!({"text": "before"}))
        .await
        .unwrap();
    assert_eq!(text_of(&answer), "before");
    assert_eq!(upstream.sessions.lock().unwrap().len(), 1);

    // The proxy restarts: the registration and its client sessions are gone; the reverse
    // client registers again and the bridge deletes the lost session's upstream session.
    proxy = proxy.restart().await;
    proxy.wait_registrations(1).await;
    let start = Instant::now();
    while upstream.deletes.load(Ordering::SeqCst) != 1 {
        assert!(start.elapsed() < DEADLINE, "the upstream session stays");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(upstream.sessions.lock().unwrap().is_empty());

    let client = Client::connect(&format!("{}/mcp", proxy.url())).unwrap();
    client.initialize().await.unwrap();
    let answer = client
        .call_tool("echo", json!({"text": "after"}))
        .await
        .unwrap();
    assert_eq!(text_of(&answer), "after");

    reverse.shutdown().await.unwrap();
    proxy.stop().await;
    stop.cancel();
}

#[tokio::test]
async fn an_unreachable_upstream_is_an_error_that_does_not_name_its_url() {
    // Nothing listens on port 1 of loopback; the query stands for anything secret in a URL.
    let url = "http://127.0.0.1:1/mcp?key=upstream-secret";
    let bridge = UpstreamBridge::new(UpstreamConfig::new(url)).unwrap();
    let answer = call(&bridge, None, 1, "ping", json!({}), Outbound::none()).await;
    let error = answer.as_error().expect("an error");
    assert!(
        error.message.contains("cannot be reached"),
        "{}",
        error.message
    );
    assert!(
        !error.message.contains("upstream-secret"),
        "{}",
        error.message
    );
    assert!(!error.message.contains("127.0.0.1:1"), "{}", error.message);
}
