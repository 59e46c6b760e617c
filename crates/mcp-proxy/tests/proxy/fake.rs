//! A hand-driven modern server (registers with capabilities, polls and answers when the test
//! says so) and an SSE reader for `/mcp` responses.

use serde_json::{json, Value};

use super::common::{client, poll, register, respond, Proxy, PATIENCE};

/// A modern registration the test drives by hand: no held polls, so no liveness surprises.
pub(crate) struct FakeServer {
    pub(crate) session: String,
    http: reqwest::Client,
    base: String,
}

impl FakeServer {
    /// Registers in pool `name` speaking `versions`.
    pub(crate) async fn register(proxy: &Proxy, name: Option<&str>, versions: &[&str]) -> Self {
        let http = client();
        let mut body = json!({"type": "mcp_server", "capabilities": {
            "client_sessions": true, "server_messages": true, "held_polls": 0,
            "protocol_versions": versions}});
        if let Some(n) = name {
            body["name"] = json!(n);
        }
        let session = register(&http, proxy, body).await;
        FakeServer {
            session,
            http,
            base: proxy.url(""),
        }
    }

    /// The next poll item, waiting up to [`PATIENCE`].
    pub(crate) async fn next_item(&self, proxy: &Proxy) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let (status, item) = poll(&self.http, proxy, &self.session, 1).await;
            match status {
                200 => return item,
                204 => assert!(
                    tokio::time::Instant::now() < deadline,
                    "no poll item arrived"
                ),
                other => panic!("poll answered {other}: {item}"),
            }
        }
    }

    /// Whether a poll right now finds nothing.
    pub(crate) async fn queue_is_empty(&self, proxy: &Proxy) -> bool {
        poll(&self.http, proxy, &self.session, 0).await.0 == 204
    }

    /// Posts `body` to `/response`; returns the status and body.
    pub(crate) async fn post(&self, proxy: &Proxy, body: Value) -> (u16, Value) {
        respond(&self.http, proxy, &self.session, body).await
    }

    /// Answers a request item with `result`, echoing the request's id.
    pub(crate) async fn answer(&self, proxy: &Proxy, item: &Value, result: Value) {
        let response = json!({"jsonrpc": "2.0", "id": item["request"]["id"], "result": result});
        let (s, v) = self
            .post(
                proxy,
                json!({"request_id": item["request_id"], "response": response}),
            )
            .await;
        assert_eq!((s, v), (200, json!({"status": "ok"})));
    }

    /// Leaves (`DELETE /register`).
    pub(crate) async fn leave(&self) {
        let status = self
            .http
            .delete(format!(
                "{}/register?session_id={}",
                self.base, self.session
            ))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 204);
    }
}

/// A JSON-RPC `initialize` request.
pub(crate) fn initialize(id: i64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "test", "version": "0"}}})
}

/// An `InitializeResult`.
pub(crate) fn init_result() -> Value {
    json!({"protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
        "serverInfo": {"name": "fake", "version": "0"}})
}

/// Builds a POST to `/mcp` (or `path`) with `accept`, the session and the 2025-11-25 header.
pub(crate) fn mcp_post(
    http: &reqwest::Client,
    url: &str,
    accept: &str,
    session: Option<&str>,
    body: &Value,
) -> reqwest::RequestBuilder {
    let mut req = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", accept)
        .body(body.to_string());
    if let Some(s) = session {
        req = req
            .header("mcp-session-id", s)
            .header("mcp-protocol-version", "2025-11-25");
    }
    req
}

/// Both content types, as the spec asks clients to send.
pub(crate) const BOTH: &str = "application/json, text/event-stream";

/// Opens a session: `initialize` answered by `server`; returns the session id.
pub(crate) async fn open_session(proxy: &Proxy, server: &FakeServer) -> String {
    open_session_at(proxy, server, "/mcp").await
}

/// [`open_session`] on `path` (`/servers/{name}/mcp`).
pub(crate) async fn open_session_at(proxy: &Proxy, server: &FakeServer, path: &str) -> String {
    let http = client();
    let call = mcp_post(
        &http,
        &proxy.url(path),
        "application/json",
        None,
        &initialize(1),
    )
    .send();
    let serve = async {
        let item = server.next_item(proxy).await;
        assert_eq!(item["request"]["method"], "initialize");
        server.answer(proxy, &item, init_result()).await;
    };
    let (resp, ()) = tokio::join!(call, serve);
    let resp = resp.unwrap();
    assert_eq!(resp.status(), 200);
    resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// One SSE block: its `id`, its data (joined), whether it was only a comment.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Block {
    pub(crate) id: Option<String>,
    pub(crate) data: String,
    pub(crate) comment: bool,
}

/// Reads SSE blocks from a streaming response.
pub(crate) struct Sse {
    resp: reqwest::Response,
    buf: String,
}

impl Sse {
    /// Wraps a response, checking it is an event stream.
    pub(crate) fn new(resp: reqwest::Response) -> Sse {
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Sse {
            resp,
            buf: String::new(),
        }
    }

    /// The next block; `None` when the stream ended. Panics after [`PATIENCE`].
    pub(crate) async fn block(&mut self) -> Option<Block> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let text: String = self.buf.drain(..end + 2).collect();
                let mut block = Block {
                    id: None,
                    data: String::new(),
                    comment: true,
                };
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        block.id = Some(v.trim().to_owned());
                        block.comment = false;
                    } else if let Some(v) = line.strip_prefix("data:") {
                        block.data.push_str(v.trim_start());
                        block.comment = false;
                    } else if !line.starts_with(':') && !line.is_empty() {
                        block.comment = false;
                    }
                }
                return Some(block);
            }
            let chunk = tokio::time::timeout(PATIENCE, self.resp.chunk())
                .await
                .expect("an SSE chunk in time")
                .expect("the stream reads");
            match chunk {
                Some(bytes) => self.buf.push_str(std::str::from_utf8(&bytes).unwrap()),
                None => return None,
            }
        }
    }

    /// The next JSON-RPC message with its event id, skipping priming events and comments.
    pub(crate) async fn message(&mut self) -> Option<(String, Value)> {
        loop {
            let block = self.block().await?;
            if block.comment || block.data.is_empty() {
                continue;
            }
            let id = block.id.expect("every message event has an id");
            return Some((id, serde_json::from_str(&block.data).unwrap()));
        }
    }

    /// The id of the priming event that opens the stream.
    pub(crate) async fn priming(&mut self) -> String {
        let block = self.block().await.expect("a priming event");
        assert!(block.data.is_empty() && !block.comment, "{block:?}");
        block.id.expect("a priming id")
    }
}
