//! Streamable HTTP against scripted peers: the headers of every request, JSON and SSE answers,
//! notifications surfaced, server requests answered, stream resumption, session expiry, DELETE.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use mcp_client::{Client, ClientOptions, Error, Transport};
use mcp_protocol::streamable::sse_priming_event;
use mcp_protocol::ErrorObject;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// One request the peer received.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    headers: HashMap<String, String>,
    body: Value,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
    fn rpc_method(&self) -> &str {
        self.body["method"].as_str().unwrap_or("")
    }
}

type Script = Arc<dyn Fn(&Seen) -> Response + Send + Sync>;

/// Serves `script` on `/mcp` for every HTTP method; returns the endpoint URL and what it saw.
async fn peer(script: Script) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = Router::new().route(
        "/mcp",
        any(move |method: Method, headers: HeaderMap, body: Bytes| {
            let script = script.clone();
            let log = log.clone();
            async move {
                let seen = Seen {
                    method,
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
                        .collect(),
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                };
                log.lock().unwrap().push(seen.clone());
                script(&seen)
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/mcp"), seen)
}

fn json_answer(req: &Seen, result: Value) -> Response {
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"jsonrpc": "2.0", "id": req.body["id"], "result": result}).to_string(),
        ))
        .unwrap()
}

fn sse(events: &str) -> Response {
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from(events.to_owned()))
        .unwrap()
}

fn status(code: StatusCode) -> Response {
    Response::builder()
        .status(code)
        .body(Body::empty())
        .unwrap()
}

/// The initialize answer, with a session id.
fn initialized(req: &Seen) -> Response {
    let mut resp = json_answer(
        req,
        json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
               "serverInfo": {"name": "scripted", "version": "1"}}),
    );
    resp.headers_mut()
        .insert("mcp-session-id", "sess-1".parse().unwrap());
    resp
}

fn data(message: Value) -> String {
    format!("event: message\ndata: {message}\n\n")
}

#[tokio::test]
async fn session_headers_json_and_sse_answers_and_delete() {
    let (url, seen) = peer(Arc::new(|req| match (req.method.as_str(), req.rpc_method()) {
        ("POST", "initialize") => initialized(req),
        ("POST", "notifications/initialized") => status(StatusCode::ACCEPTED),
        ("POST", "tools/list") => sse(&format!(
            ": keep-alive\n\n{}{}",
            data(json!({"jsonrpc": "2.0", "method": "notifications/message",
                        "params": {"level": "info", "data": "listing"}})),
            data(json!({"jsonrpc": "2.0", "id": req.body["id"],
                        "result": {"tools": [{"name": "echo", "inputSchema": {"type": "object"}}]}}))
        )),
        ("DELETE", _) => status(StatusCode::NO_CONTENT),
        other => panic!("unexpected {other:?}"),
    }))
    .await;
    let notes = Arc::new(Mutex::new(Vec::new()));
    let sink = notes.clone();
    let client = Client::with_options(
        &url,
        ClientOptions {
            on_notification: Some(Arc::new(move |n| sink.lock().unwrap().push(n))),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    assert_eq!(client.transport(), Transport::Streamable);
    let info = client.initialize().await.unwrap();
    assert_eq!(info.server_info.name, "scripted");
    assert_eq!(client.session_id().as_deref(), Some("sess-1"));
    let tools = client.list_tools().await.unwrap();
    assert_eq!(tools[0].name, "echo");
    let notes = notes.lock().unwrap().clone();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].method, "notifications/message");
    client.close().await.unwrap();
    assert_eq!(client.session_id(), None);

    let seen = seen.lock().unwrap();
    let methods: Vec<_> = seen
        .iter()
        .map(|s| format!("{} {}", s.method, s.rpc_method()))
        .collect();
    assert_eq!(
        methods,
        [
            "POST initialize",
            "POST notifications/initialized",
            "POST tools/list",
            "DELETE "
        ]
    );
    let init = &seen[0];
    assert_eq!(
        init.header("accept"),
        Some("application/json, text/event-stream")
    );
    assert_eq!(init.header("content-type"), Some("application/json"));
    assert_eq!(init.header("mcp-session-id"), None);
    assert_eq!(init.header("mcp-protocol-version"), None);
    for later in &seen[1..] {
        assert_eq!(later.header("mcp-session-id"), Some("sess-1"), "{later:?}");
        // The version the server chose, not the one the client offered.
        assert_eq!(
            later.header("mcp-protocol-version"),
            Some("2025-06-18"),
            "{later:?}"
        );
    }
    assert!(seen[1].body.get("id").is_none(), "a notification has no id");
}

#[tokio::test]
async fn a_stream_skips_other_messages_and_answers_server_pings() {
    let (url, seen) = peer(Arc::new(|req| match req.rpc_method() {
        "initialize" => initialized(req),
        "tools/call" => sse(&format!(
            "{}{}{}{}",
            data(json!({"jsonrpc": "2.0", "id": "srv-1", "method": "ping"})),
            data(
                json!({"jsonrpc": "2.0", "id": "srv-2", "method": "sampling/createMessage",
                        "params": {}})
            ),
            data(json!({"jsonrpc": "2.0", "id": 999, "result": {"content": []}})),
            data(json!({"jsonrpc": "2.0", "id": req.body["id"],
                        "result": {"content": [{"type": "text", "text": "HI"}]}}))
        )),
        // The client's answers to the server's requests, and the initialized notification.
        _ => status(StatusCode::ACCEPTED),
    }))
    .await;
    let client = Client::connect(&url).unwrap();
    client.initialize().await.unwrap();
    let result = client
        .call_tool("echo", json!({"text": "hi"}))
        .await
        .unwrap();
    assert_eq!(mcp_client::text_of(&result), "HI");
    let seen = seen.lock().unwrap();
    let answers: Vec<_> = seen
        .iter()
        .filter(|s| s.body.get("method").is_none() && s.method == Method::POST)
        .map(|s| s.body.clone())
        .collect();
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(
        answers[0],
        json!({"jsonrpc": "2.0", "id": "srv-1", "result": {}})
    );
    assert_eq!(answers[1]["id"], "srv-2");
    assert_eq!(answers[1]["error"]["code"], -32601);
}

#[tokio::test]
async fn server_requests_go_to_on_request_and_capabilities_are_declared() {
    let (url, seen) = peer(Arc::new(|req| match req.rpc_method() {
        "initialize" => initialized(req),
        "tools/call" => sse(&format!(
            "{}{}{}",
            data(
                json!({"jsonrpc": "2.0", "id": "srv-1", "method": "sampling/createMessage",
                        "params": {"maxTokens": 5}})
            ),
            data(json!({"jsonrpc": "2.0", "id": "srv-2", "method": "roots/list"})),
            data(json!({"jsonrpc": "2.0", "id": req.body["id"],
                        "result": {"content": [{"type": "text", "text": "HI"}]}}))
        )),
        _ => status(StatusCode::ACCEPTED),
    }))
    .await;
    let client = Client::with_options(
        &url,
        ClientOptions {
            on_request: Some(mcp_client::request_handler(|method, params| async move {
                match method.as_str() {
                    "sampling/createMessage" => Ok(json!({"echoed": params})),
                    _ => Err(ErrorObject::invalid_params("no roots here")),
                }
            })),
            capabilities: serde_json::from_value(json!({"sampling": {}})).unwrap(),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    client.initialize().await.unwrap();
    client.call_tool("echo", json!({})).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen[0].body["params"]["capabilities"],
        json!({"sampling": {}})
    );
    let answers: Vec<_> = seen
        .iter()
        .filter(|s| s.body.get("method").is_none() && s.method == Method::POST)
        .map(|s| s.body.clone())
        .collect();
    assert_eq!(
        answers,
        [
            json!({"jsonrpc": "2.0", "id": "srv-1", "result": {"echoed": {"maxTokens": 5}}}),
            json!({"jsonrpc": "2.0", "id": "srv-2",
                   "error": {"code": -32602, "message": answers[1]["error"]["message"]}}),
        ]
    );
}

#[tokio::test]
async fn listen_serves_the_session_stream() {
    let (url, seen) = peer(Arc::new(|req| {
        match (req.method.as_str(), req.rpc_method()) {
            ("POST", "initialize") => initialized(req),
            ("GET", _) => {
                assert_eq!(req.header("accept"), Some("text/event-stream"));
                assert_eq!(req.header("mcp-session-id"), Some("sess-1"));
                sse(&format!(
                    "{}{}{}",
                    sse_priming_event("g.0"),
                    data(json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})),
                    data(json!({"jsonrpc": "2.0", "id": 7, "method": "ping"}))
                ))
            }
            _ => status(StatusCode::ACCEPTED),
        }
    }))
    .await;
    let notes = Arc::new(Mutex::new(Vec::new()));
    let sink = notes.clone();
    let client = Client::with_options(
        &url,
        ClientOptions {
            on_notification: Some(Arc::new(move |n| sink.lock().unwrap().push(n.method))),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    client.initialize().await.unwrap();
    let stream = client.open_stream().await.unwrap();
    client.listen(stream).await.unwrap();
    assert_eq!(*notes.lock().unwrap(), ["notifications/tools/list_changed"]);
    let seen = seen.lock().unwrap();
    let last = seen.last().unwrap();
    assert_eq!(last.body, json!({"jsonrpc": "2.0", "id": 7, "result": {}}));
}

#[tokio::test]
async fn a_stream_closed_early_is_resumed_with_last_event_id() {
    let (url, seen) = peer(Arc::new(|req| {
        match (req.method.as_str(), req.rpc_method()) {
            ("POST", "initialize") => initialized(req),
            // A priming event with an id and a short retry, then the server closes the stream.
            ("POST", "ping") => sse(&format!("retry: 5\n{}", sse_priming_event("st.1"))),
            ("GET", _) => {
                assert_eq!(req.header("last-event-id"), Some("st.1"));
                assert_eq!(req.header("accept"), Some("text/event-stream"));
                // The response's id is the ping's; the client numbers requests from 1.
                sse(&format!(
                    "id: st.2\n{}",
                    data(json!({"jsonrpc": "2.0", "id": 2, "result": {}}))
                ))
            }
            _ => status(StatusCode::ACCEPTED),
        }
    }))
    .await;
    let client = Client::connect(&url).unwrap();
    client.initialize().await.unwrap();
    client.ping().await.unwrap();
    let seen = seen.lock().unwrap();
    let get = seen.iter().find(|s| s.method == Method::GET).unwrap();
    assert_eq!(get.header("mcp-session-id"), Some("sess-1"));
}

#[tokio::test]
async fn a_stream_that_ends_without_ids_or_response_is_an_error() {
    let (url, _) = peer(Arc::new(|req| match req.rpc_method() {
        "initialize" => initialized(req),
        "ping" => sse(": nothing here\n\n"),
        _ => status(StatusCode::ACCEPTED),
    }))
    .await;
    let client = Client::connect(&url).unwrap();
    client.initialize().await.unwrap();
    let err = client.ping().await.unwrap_err();
    assert!(
        matches!(err, Error::InvalidResponse(ref m) if m.contains("ended before")),
        "{err}"
    );
}

#[tokio::test]
async fn a_404_with_a_session_is_session_expired_and_initialize_starts_afresh() {
    let (url, seen) = peer(Arc::new(|req| {
        match (req.rpc_method(), req.header("mcp-session-id")) {
            ("initialize", _) => initialized(req),
            ("tools/list", Some(_)) => status(StatusCode::NOT_FOUND),
            _ => status(StatusCode::ACCEPTED),
        }
    }))
    .await;
    let client = Client::connect(&url).unwrap();
    client.initialize().await.unwrap();
    let err = client.list_tools().await.unwrap_err();
    assert!(matches!(err, Error::SessionExpired), "{err}");
    assert_eq!(client.session_id(), None);
    client.initialize().await.unwrap();
    let seen = seen.lock().unwrap();
    let inits: Vec<_> = seen
        .iter()
        .filter(|s| s.rpc_method() == "initialize")
        .collect();
    assert_eq!(inits.len(), 2);
    assert_eq!(
        inits[1].header("mcp-session-id"),
        None,
        "the dead id is not presented again"
    );
}

#[tokio::test]
async fn a_404_without_a_session_is_a_plain_status_error() {
    let (url, _) = peer(Arc::new(|_| status(StatusCode::NOT_FOUND))).await;
    let err = Client::connect(&url).unwrap().ping().await.unwrap_err();
    assert!(matches!(err, Error::Status { status: 404, .. }), "{err}");
}

#[tokio::test]
async fn a_server_that_refuses_delete_is_fine() {
    let (url, _) = peer(Arc::new(|req| {
        match (req.method.as_str(), req.rpc_method()) {
            ("POST", "initialize") => initialized(req),
            ("DELETE", _) => status(StatusCode::METHOD_NOT_ALLOWED),
            _ => status(StatusCode::ACCEPTED),
        }
    }))
    .await;
    let client = Client::connect(&url).unwrap();
    client.initialize().await.unwrap();
    client.close().await.unwrap();
    // Closing twice (or without a session) sends nothing and succeeds.
    client.close().await.unwrap();
}

#[test]
fn the_transport_follows_the_url_unless_told() {
    assert_eq!(
        Transport::for_url("http://h:9000/mcp"),
        Transport::Streamable
    );
    assert_eq!(
        Transport::for_url("http://h:9000/servers/alpha/mcp/"),
        Transport::Streamable
    );
    assert_eq!(Transport::for_url("http://h:9000"), Transport::Message);
    assert_eq!(
        Transport::for_url("http://h:9000/servers/alpha/message"),
        Transport::Message
    );
    let c = Client::with_options(
        "http://h:9000",
        ClientOptions {
            transport: Some(Transport::Streamable),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    assert_eq!(c.endpoint(), "http://h:9000/mcp");
    assert_eq!(c.transport(), Transport::Streamable);
    assert_eq!(
        Client::connect("http://h:9000").unwrap().endpoint(),
        "http://h:9000/message"
    );
}
