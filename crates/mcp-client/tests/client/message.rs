//! The seed's `/message` transport: how each kind of failure surfaces, and that pagination is
//! followed.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use mcp_client::{Client, Error};
use serde_json::{json, Value};
use tokio::net::TcpListener;

type Script = Arc<dyn Fn(Value) -> (StatusCode, String) + Send + Sync>;

/// Serves `script` on `/message` and returns the base URL and the bodies it received.
async fn peer(script: Script) -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = Router::new().route(
        "/message",
        post(move |body: Bytes| {
            let script = script.clone();
            let log = log.clone();
            async move {
                let v: Value = serde_json::from_slice(&body).unwrap();
                log.lock().unwrap().push(v.clone());
                let (status, body) = script(v);
                (status, [("content-type", "application/json")], body).into_response()
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

fn answer(req: &Value, result: Value) -> (StatusCode, String) {
    (
        StatusCode::OK,
        json!({"jsonrpc": "2.0", "id": req["id"], "result": result}).to_string(),
    )
}

#[tokio::test]
async fn initialize_then_initialized_notification() {
    let (url, seen) = peer(Arc::new(|req| match req["method"].as_str() {
        Some("initialize") => answer(
            &req,
            json!({"protocolVersion": "2025-11-25", "capabilities": {},
                   "serverInfo": {"name": "Reverse MCP Server", "version": "1.0.0"}}),
        ),
        _ => (StatusCode::ACCEPTED, String::new()),
    }))
    .await;
    let client = Client::connect(&url).unwrap();
    assert!(client.endpoint().ends_with("/message"));
    let info = client.initialize().await.unwrap();
    assert_eq!(info.server_info.name, "Reverse MCP Server");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1]["method"], "notifications/initialized");
    assert!(seen[1].get("id").is_none(), "a notification has no id");
}

#[tokio::test]
async fn list_tools_follows_every_cursor() {
    let (url, seen) = peer(Arc::new(|req| {
        let page = |name: &str, next: Option<&str>| {
            let mut r = json!({"tools": [{"name": name, "inputSchema": {"type": "object"}}]});
            if let Some(n) = next {
                r["nextCursor"] = json!(n);
            }
            r
        };
        match req["params"]["cursor"].as_str() {
            None => answer(&req, page("a", Some("p2"))),
            Some("p2") => answer(&req, page("b", Some("p3"))),
            Some("p3") => answer(&req, page("c", None)),
            Some(other) => panic!("unexpected cursor {other}"),
        }
    }))
    .await;
    let tools = Client::connect(&url).unwrap().list_tools().await.unwrap();
    let names: Vec<_> = tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(seen.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn a_repeated_cursor_is_an_error_not_a_hang() {
    let (url, _) = peer(Arc::new(|req| {
        answer(&req, json!({"tools": [], "nextCursor": "same"}))
    }))
    .await;
    let err = Client::connect(&url)
        .unwrap()
        .list_tools()
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidResponse(ref m) if m.contains("same cursor")),
        "{err}"
    );
}

#[tokio::test]
async fn jsonrpc_error_on_200_is_rpc() {
    let (url, _) = peer(Arc::new(|req| {
        (
            StatusCode::OK,
            json!({"jsonrpc": "2.0", "id": req["id"],
                   "error": {"code": -32601, "message": "Method not found: nope"}})
            .to_string(),
        )
    }))
    .await;
    let err = Client::connect(&url)
        .unwrap()
        .request("nope", None)
        .await
        .unwrap_err();
    assert_eq!(err.rpc().unwrap().code.0, -32601);
    assert!(matches!(err, Error::Rpc(_)));
}

#[tokio::test]
async fn http_error_status_keeps_the_jsonrpc_message() {
    let (url, _) = peer(Arc::new(|_| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"jsonrpc": "2.0", "id": 1,
                   "error": {"code": -32010, "message": "no MCP server registered"}})
            .to_string(),
        )
    }))
    .await;
    let err = Client::connect(&url).unwrap().ping().await.unwrap_err();
    match &err {
        Error::Status { status, body, rpc } => {
            assert_eq!(*status, 503);
            assert_eq!(body, "no MCP server registered");
            assert_eq!(rpc.as_ref().unwrap().code.0, -32010);
        }
        other => panic!("expected a status error, got {other}"),
    }
    assert_eq!(err.to_string(), "HTTP 503: no MCP server registered");
}

#[tokio::test]
async fn an_answer_with_another_id_is_refused() {
    let (url, _) = peer(Arc::new(|_| {
        (
            StatusCode::OK,
            json!({"jsonrpc": "2.0", "id": 999, "result": {}}).to_string(),
        )
    }))
    .await;
    let err = Client::connect(&url).unwrap().ping().await.unwrap_err();
    assert!(
        matches!(err, Error::InvalidResponse(ref m) if m.contains("999")),
        "{err}"
    );
}

#[tokio::test]
async fn connection_refused_is_a_transport_error() {
    // Bind, read the port, close: nothing listens there any more.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = Client::connect(&format!("http://{addr}"))
        .unwrap()
        .ping()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err}");
}

#[test]
fn bad_urls_are_refused_up_front() {
    assert!(matches!(
        Client::connect("not a url"),
        Err(Error::InvalidUrl { .. })
    ));
    assert!(matches!(
        Client::connect("ftp://example.com"),
        Err(Error::InvalidUrl { .. })
    ));
    let c = Client::connect("http://example.com/servers/alpha/message").unwrap();
    assert_eq!(c.endpoint(), "http://example.com/servers/alpha/message");
}
