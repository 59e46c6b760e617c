//! The `http` feature: Streamable HTTP served directly, driven over real sockets with reqwest.

use std::time::Duration;

use futures::StreamExt;
use mcp_protocol::mcp::notifications::LoggingLevel;
use mcp_server::http::{self, HttpConfig, HttpHandle, ResponsePreference};
use mcp_server::{demo, Server, ServerConfig};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

/// The 2026-07-28 era on the same endpoint.
mod stateless;

const BOTH: &str = "application/json, text/event-stream";
const JSON_ONLY: &str = "application/json";
const SSE_ONLY: &str = "text/event-stream";

/// A running endpoint and a client for it.
struct Peer {
    http: reqwest::Client,
    handle: HttpHandle,
}

async fn start(server: Server, config: HttpConfig) -> Peer {
    let handle = http::start(server, "127.0.0.1:0", config).await.unwrap();
    Peer {
        http: reqwest::Client::new(),
        handle,
    }
}

async fn start_default() -> (Server, Probes, Peer) {
    let (server, probes) = server();
    let peer = start(server.clone(), HttpConfig::default()).await;
    (server, probes, peer)
}

fn initialize_body(capabilities: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": capabilities,
        "clientInfo": {"name": "http-test", "version": "1"}
    }})
}

fn call(id: i64, name: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": name, "arguments": arguments}})
}

impl Peer {
    fn url(&self) -> String {
        self.handle.url()
    }

    /// POSTs a body with `Accept: accept`, in `session` (with the 2025-11-25 version header).
    async fn post(&self, session: Option<&str>, accept: &str, body: &Value) -> reqwest::Response {
        let mut req = self
            .http
            .post(self.url())
            .header("accept", accept)
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(s) = session {
            req = req
                .header("mcp-session-id", s)
                .header("mcp-protocol-version", "2025-11-25");
        }
        within(req.send()).await.unwrap()
    }

    /// Starts a session (declaring `capabilities`) and returns its id.
    async fn init(&self, capabilities: Value) -> String {
        let r = self.post(None, BOTH, &initialize_body(capabilities)).await;
        assert_eq!(r.status(), StatusCode::OK);
        let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["result"]["protocolVersion"], "2025-11-25");
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let r = self.post(Some(&sid), BOTH, &note).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        sid
    }

    /// Opens the session's GET stream (resuming after `last_event`, if given).
    async fn get(&self, session: &str, last_event: Option<&str>) -> reqwest::Response {
        let mut req = self
            .http
            .get(self.url())
            .header("accept", SSE_ONLY)
            .header("mcp-session-id", session)
            .header("mcp-protocol-version", "2025-11-25");
        if let Some(id) = last_event {
            req = req.header("last-event-id", id);
        }
        within(req.send()).await.unwrap()
    }

    async fn delete(&self, session: Option<&str>) -> StatusCode {
        let mut req = self.http.delete(self.url());
        if let Some(s) = session {
            req = req.header("mcp-session-id", s);
        }
        within(req.send()).await.unwrap().status()
    }
}

fn content_type(r: &reqwest::Response) -> String {
    r.headers()["content-type"].to_str().unwrap().to_owned()
}

/// One SSE event (or comment) as read off the wire.
#[derive(Debug, Default)]
struct Event {
    id: Option<String>,
    data: String,
    comment: bool,
}

impl Event {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {:?}", self.data))
    }
}

/// Reads SSE events off a response body.
struct Sse {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: String,
}

impl Sse {
    fn new(r: reqwest::Response) -> Self {
        assert_eq!(content_type(&r), SSE_ONLY);
        Sse {
            body: r.bytes_stream().boxed(),
            buf: String::new(),
        }
    }

    /// The next event or comment; `None` when the stream ended.
    async fn next_any(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut event = Event::default();
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        event.id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push(v);
                    } else if line.starts_with(':') {
                        event.comment = true;
                    }
                }
                event.data = data.join("\n");
                return Some(event);
            }
            match within(self.body.next()).await {
                Some(chunk) => self
                    .buf
                    .push_str(std::str::from_utf8(&chunk.unwrap()).unwrap()),
                None => return None,
            }
        }
    }

    /// The next event carrying a message (comments and priming events skipped).
    async fn next(&mut self) -> Event {
        loop {
            let e = self.next_any().await.expect("the stream ended");
            if !e.comment && !e.data.is_empty() {
                return e;
            }
        }
    }

    /// Waits until the stream ends, failing on any message meanwhile.
    async fn ended(&mut self) {
        while let Some(e) = self.next_any().await {
            assert!(e.comment || e.data.is_empty(), "unexpected {e:?}");
        }
    }
}

#[tokio::test]
async fn initialize_mints_a_random_session_id_required_afterwards() {
    let (server, _, peer) = start_default().await;
    let a = peer.init(json!({})).await;
    let b = peer.init(json!({})).await;
    assert_ne!(a, b);
    let parsed = uuid::Uuid::parse_str(&a).expect("a UUID");
    assert_eq!(parsed.get_version_num(), 4);
    assert!(server.has_session(&a) && server.has_session(&b));

    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let r = peer.post(None, BOTH, &ping).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["id"], Value::Null);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Mcp-Session-Id"));

    let r = peer.post(Some("no-such-session"), BOTH, &ping).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let r = peer.post(Some(&a), BOTH, &ping).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(content_type(&r), JSON_ONLY);
    assert_eq!(r.json::<Value>().await.unwrap()["result"], json!({}));

    // A failed initialize starts nothing.
    let bad = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}});
    let r = peer.post(None, BOTH, &bad).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("mcp-session-id").is_none());
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], -32602);
    assert_eq!(server.session_count(), 2);
    peer.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn protocol_version_header_is_checked() {
    let (_, _, peer) = start_default().await;
    let sid = peer.init(json!({})).await;
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let send = |version: Option<&'static str>| {
        let mut req = peer
            .http
            .post(peer.url())
            .header("accept", BOTH)
            .header("content-type", "application/json")
            .header("mcp-session-id", &sid)
            .body(ping.to_string());
        if let Some(v) = version {
            req = req.header("mcp-protocol-version", v);
        }
        req.send()
    };
    let r = within(send(Some("1999-01-01"))).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32022);
    assert_eq!(body["error"]["data"]["requested"], "1999-01-01");
    let supported = body["error"]["data"]["supported"].as_array().unwrap();
    assert!(supported.contains(&json!("2025-11-25")));
    // Absent reads as 2025-03-26, which is supported.
    assert_eq!(within(send(None)).await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        within(send(Some("2025-06-18"))).await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn delete_ends_the_session() {
    let (server, _, peer) = start_default().await;
    let sid = peer.init(json!({})).await;
    let mut stream = Sse::new(peer.get(&sid, None).await);
    assert_eq!(peer.delete(None).await, StatusCode::BAD_REQUEST);
    assert_eq!(peer.delete(Some("nope")).await, StatusCode::NOT_FOUND);
    assert_eq!(peer.delete(Some(&sid)).await, StatusCode::NO_CONTENT);
    assert!(!server.has_session(&sid));
    // Its GET stream ends, and the session is gone for good.
    stream.ended().await;
    assert_eq!(peer.delete(Some(&sid)).await, StatusCode::NOT_FOUND);
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    assert_eq!(
        peer.post(Some(&sid), BOTH, &ping).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(peer.get(&sid, None).await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn expired_sessions_get_404() {
    let (server, _) = server_with(
        ServerConfig::new("t", "1").with_session_idle_timeout(Duration::from_millis(50)),
    );
    let peer = start(server.clone(), HttpConfig::default()).await;
    let sid = peer.init(json!({})).await;
    // Waits for the idle timeout to pass (bounded by `within`), without touching the session.
    within(async {
        while server.has_session(&sid) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    assert_eq!(
        peer.post(Some(&sid), BOTH, &ping).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn bodies_that_are_not_one_json_rpc_message_are_refused() {
    let (_, _, peer) = start_default().await;
    let sid = peer.init(json!({})).await;
    let raw = |body: &'static str, content_type: &'static str| {
        peer.http
            .post(peer.url())
            .header("accept", BOTH)
            .header("content-type", content_type)
            .header("mcp-session-id", &sid)
            .body(body)
            .send()
    };
    let r = within(raw("{not json", "application/json")).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], -32700);
    let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#;
    let r = within(raw(batch, "application/json")).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], -32600);
    let r = within(raw(r#"{"id":1,"method":"ping"}"#, "application/json"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], -32600);
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let r = within(raw(ping, "text/plain")).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = within(raw(ping, "application/json; charset=utf-8"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let (server, _) = server();
    let peer = start(server, HttpConfig::default().with_max_body_bytes(1024)).await;
    let sid = peer.init(json!({})).await;
    let big = call(1, "echo", json!({"text": "x".repeat(2048)}));
    assert_eq!(
        peer.post(Some(&sid), BOTH, &big).await.status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let small = call(2, "echo", json!({"text": "ok"}));
    assert_eq!(
        peer.post(Some(&sid), BOTH, &small).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn notifications_and_responses_get_202() {
    let (_, _, peer) = start_default().await;
    let sid = peer.init(json!({})).await;
    let note = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                      "params": {"requestId": 99}});
    let r = peer.post(Some(&sid), BOTH, &note).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(r.bytes().await.unwrap().is_empty());
    let answer = json!({"jsonrpc": "2.0", "id": "nobody-waits", "result": {}});
    let r = peer.post(Some(&sid), BOTH, &answer).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(r.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn accept_decides_json_or_sse() {
    let (_, _, peer) = start_default().await;
    let sid = peer.init(json!({})).await;
    let echo = call(1, "echo", json!({"text": "hi", "uppercase": true}));

    let r = peer.post(Some(&sid), JSON_ONLY, &echo).await;
    assert_eq!(content_type(&r), JSON_ONLY);
    let body: Value = r.json().await.unwrap();
    assert_eq!(text(&body["result"]), "HI");

    let r = peer.post(Some(&sid), SSE_ONLY, &echo).await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut sse = Sse::new(r);
    // A 2025-11-25 client is primed with an event id first, so it could resume at once.
    let priming = sse.next_any().await.unwrap();
    assert!(
        priming.id.is_some() && priming.data.is_empty(),
        "{priming:?}"
    );
    let answer = sse.next().await;
    assert!(answer.id.is_some(), "events carry ids");
    assert_eq!(text(&answer.json()["result"]), "HI");
    sse.ended().await;

    // Both accepted: the adaptive default answers a quiet call with JSON.
    let r = peer.post(Some(&sid), BOTH, &echo).await;
    assert_eq!(content_type(&r), JSON_ONLY);

    let r = peer.post(Some(&sid), "text/html", &echo).await;
    assert_eq!(r.status(), StatusCode::NOT_ACCEPTABLE);
}

#[tokio::test]
async fn a_chatty_handler_gets_an_sse_answer_with_its_messages_first() {
    let (_, _, peer) = start_default().await;
    let sid = peer.init(json!({})).await;
    let mut progress = call(1, "progress", json!({}));
    progress["params"]["_meta"] = json!({"progressToken": "tok"});
    let r = peer.post(Some(&sid), BOTH, &progress).await;
    let mut sse = Sse::new(r);
    let mut methods = Vec::new();
    let result = loop {
        let m = sse.next().await.json();
        match m.get("method") {
            Some(method) => methods.push(method.as_str().unwrap().to_owned()),
            None => break m,
        }
    };
    assert_eq!(
        methods,
        [
            "notifications/progress",
            "notifications/progress",
            "notifications/message",
            "notifications/message"
        ]
    );
    assert_eq!(
        text(&result["result"]),
        "progress sent: true true, logs sent: true true"
    );
    sse.ended().await;

    // A server that prefers JSON sends them to the GET stream instead.
    let (server, _) = server();
    let peer = start(
        server,
        HttpConfig::default().with_response(ResponsePreference::Json),
    )
    .await;
    let sid = peer.init(json!({})).await;
    let mut get = Sse::new(peer.get(&sid, None).await);
    let r = peer.post(Some(&sid), BOTH, &progress).await;
    assert_eq!(content_type(&r), JSON_ONLY);
    assert_eq!(
        text(&r.json::<Value>().await.unwrap()["result"]),
        "progress sent: true true, logs sent: true true"
    );
    let first = get.next().await;
    assert_eq!(first.json()["method"], "notifications/progress");
    assert!(first.id.unwrap().starts_with("g."));
}

#[tokio::test]
async fn sampling_round_trip_on_the_post_stream() {
    let (_, _, peer) = start_default().await;
    let sid = peer.init(json!({"sampling": {}})).await;
    let r = peer
        .post(Some(&sid), BOTH, &call(7, "sample", json!({})))
        .await;
    let mut sse = Sse::new(r);
    let request = sse.next().await.json();
    assert_eq!(request["method"], "sampling/createMessage");
    let answer = json!({"jsonrpc": "2.0", "id": request["id"], "result": {
        "role": "assistant", "content": {"type": "text", "text": "4"}, "model": "m"
    }});
    let r = peer.post(Some(&sid), BOTH, &answer).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let result = sse.next().await.json();
    assert_eq!(result["id"], 7);
    assert_eq!(text(&result["result"]), "m said \"4\"");
}

#[tokio::test]
async fn json_only_clients_get_server_requests_on_their_get_stream() {
    let (_, _, peer) = start_default().await;
    let sid = peer.init(json!({"sampling": {}})).await;

    // Without a GET stream the client cannot be asked: the tool says so.
    let r = peer
        .post(Some(&sid), JSON_ONLY, &call(1, "sample", json!({})))
        .await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["result"]["isError"], true);
    assert!(
        text(&body["result"]).contains("cannot be reached"),
        "{body}"
    );

    let mut get = Sse::new(peer.get(&sid, None).await);
    let pending = {
        let peer_http = peer.http.clone();
        let url = peer.url();
        let sid = sid.clone();
        tokio::spawn(async move {
            peer_http
                .post(url)
                .header("accept", JSON_ONLY)
                .header("content-type", "application/json")
                .header("mcp-session-id", sid)
                .header("mcp-protocol-version", "2025-11-25")
                .body(call(2, "sample", json!({})).to_string())
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    let request = get.next().await.json();
    assert_eq!(request["method"], "sampling/createMessage");
    let answer = json!({"jsonrpc": "2.0", "id": request["id"], "result": {
        "role": "assistant", "content": {"type": "text", "text": "4"}, "model": "m"
    }});
    assert_eq!(
        peer.post(Some(&sid), JSON_ONLY, &answer).await.status(),
        StatusCode::ACCEPTED
    );
    let body = within(pending).await.unwrap();
    assert_eq!(text(&body["result"]), "m said \"4\"");
}

#[tokio::test]
async fn get_stream_carries_session_messages_and_keep_alives() {
    let (server, _) = server();
    let peer = start(
        server.clone(),
        HttpConfig::default().with_keep_alive(Duration::from_millis(30)),
    )
    .await;
    let sid = peer.init(json!({})).await;
    let other = peer.init(json!({})).await;

    let r = within(
        peer.http
            .get(peer.url())
            .header("accept", JSON_ONLY)
            .header("mcp-session-id", &sid)
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_ACCEPTABLE);
    let r = within(peer.http.get(peer.url()).header("accept", SSE_ONLY).send())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    let mut get = Sse::new(peer.get(&sid, None).await);
    // Idle: keep-alive comments.
    let e = get.next_any().await.unwrap();
    assert!(e.comment, "{e:?}");

    // Only the session with a GET stream is reached.
    assert_eq!(server.notify_tools_list_changed(), 1);
    let e = get.next().await;
    assert_eq!(e.json()["method"], "notifications/tools/list_changed");
    assert!(!server.send_to_session(&other, mcp_protocol::Message::from_value(e.json()).unwrap()));

    // Server log messages respect logging/setLevel.
    let set = json!({"jsonrpc": "2.0", "id": 3, "method": "logging/setLevel",
                     "params": {"level": "error"}});
    assert_eq!(
        peer.post(Some(&sid), BOTH, &set).await.status(),
        StatusCode::OK
    );
    server.log(LoggingLevel::Info, None, "quiet");
    server.log(LoggingLevel::Error, None, "loud");
    let e = get.next().await;
    assert_eq!(e.json()["params"]["data"], "loud");
}

#[tokio::test]
async fn get_stream_resumes_with_last_event_id() {
    let (server, _, peer) = start_default().await;
    let sid = peer.init(json!({})).await;
    let mut get = Sse::new(peer.get(&sid, None).await);
    server.notify_tools_list_changed();
    let seen = get.next().await.id.unwrap();
    drop(get);
    // Sent while the client is away: kept for it.
    server.notify_prompts_list_changed();
    server.notify_resources_list_changed();
    let mut get = Sse::new(peer.get(&sid, Some(&seen)).await);
    assert_eq!(
        get.next().await.json()["method"],
        "notifications/prompts/list_changed"
    );
    assert_eq!(
        get.next().await.json()["method"],
        "notifications/resources/list_changed"
    );
    // And live again.
    server.notify_tools_list_changed();
    assert_eq!(
        get.next().await.json()["method"],
        "notifications/tools/list_changed"
    );
}

#[tokio::test]
async fn a_dropped_post_stream_is_resumed_and_its_request_keeps_running() {
    let (_, probes, peer) = start_default().await;
    let sid = peer.init(json!({})).await;
    let r = peer
        .post(Some(&sid), SSE_ONLY, &call(5, "slow", json!({})))
        .await;
    let mut sse = Sse::new(r);
    let priming = sse.next_any().await.unwrap();
    let last = priming.id.expect("a priming id");
    probes.started().await;
    drop(sse);
    // Disconnection is not cancellation: the tool finishes, and its answer waits.
    probes.release.notify_one();
    let mut resumed = Sse::new(peer.get(&sid, Some(&last)).await);
    let answer = resumed.next().await.json();
    assert_eq!(answer["id"], 5);
    assert_eq!(text(&answer["result"]), "slow done");
    resumed.ended().await;

    // Resumed while the request still runs: the answer arrives live on the new connection.
    let r = peer
        .post(Some(&sid), SSE_ONLY, &call(6, "slow", json!({})))
        .await;
    let mut sse = Sse::new(r);
    let last = sse.next_any().await.unwrap().id.unwrap();
    probes.started().await;
    drop(sse);
    let mut resumed = Sse::new(peer.get(&sid, Some(&last)).await);
    probes.release.notify_one();
    let answer = resumed.next().await.json();
    assert_eq!(answer["id"], 6);
    resumed.ended().await;
}

#[tokio::test]
async fn host_and_origin_outside_the_allow_list_get_403() {
    let (server, _) = server();
    let peer = start(
        server,
        HttpConfig::default().with_allowed_hosts(["mcp.example.com"]),
    )
    .await;
    let send = |headers: HeaderMap| {
        peer.http
            .post(peer.url())
            .header("accept", BOTH)
            .header("content-type", "application/json")
            .headers(headers)
            .body(initialize_body(json!({})).to_string())
            .send()
    };
    let with = |pairs: &[(&'static str, &'static str)]| {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    };
    for (pairs, expected) in [
        (vec![("host", "evil.example.com")], StatusCode::FORBIDDEN),
        (
            vec![("origin", "http://evil.example.com")],
            StatusCode::FORBIDDEN,
        ),
        (vec![("origin", "null")], StatusCode::FORBIDDEN),
        (vec![("host", "mcp.example.com:443")], StatusCode::OK),
        (vec![("origin", "https://mcp.example.com")], StatusCode::OK),
        (vec![("origin", "http://localhost:6274")], StatusCode::OK),
        (vec![], StatusCode::OK),
    ] {
        let r = within(send(with(&pairs))).await.unwrap();
        assert_eq!(r.status(), expected, "{pairs:?}");
    }
    let r = within(
        peer.http
            .get(peer.url())
            .header("host", "evil.example.com")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_sessionless_discover_is_answered_in_any_era() {
    let (_, _, peer) = start_default().await;
    let discover = json!({"jsonrpc": "2.0", "id": 2, "method": "server/discover"});
    let r = peer.post(None, BOTH, &discover).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert!(body["result"]["supportedVersions"].is_array());
}

#[tokio::test]
async fn shutdown_ends_open_streams_and_stops_listening() {
    let (_, _, peer) = start_default().await;
    let sid = peer.init(json!({})).await;
    let mut get = Sse::new(peer.get(&sid, None).await);
    let url = peer.url();
    within(peer.handle.shutdown()).await.unwrap();
    get.ended().await;
    let refused = reqwest::Client::new().get(url).send().await;
    assert!(refused.is_err(), "nothing listens any more");
}

#[tokio::test]
async fn server_start_serves_the_seed_tools() {
    let server = Server::new(ServerConfig::new("Direct MCP Server", "1.0.0"));
    demo::register_seed_tools(&server, false);
    let handle = server.start("127.0.0.1:0").await.unwrap();
    assert!(handle.url().ends_with("/mcp"));
    let peer = Peer {
        http: reqwest::Client::new(),
        handle,
    };
    let sid = peer.init(json!({})).await;
    let expect = [
        (
            call(
                1,
                "calculator",
                json!({"operation": "add", "a": 15, "b": 27}),
            ),
            "Result: 42.000000",
            false,
        ),
        (
            call(
                2,
                "calculator",
                json!({"operation": "divide", "a": 1, "b": 0}),
            ),
            "Division by zero",
            true,
        ),
        (
            call(3, "echo", json!({"text": "Hello", "uppercase": true})),
            "HELLO",
            false,
        ),
    ];
    for (request, want, is_error) in expect {
        let body: Value = peer
            .post(Some(&sid), BOTH, &request)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(text(&body["result"]), want);
        assert_eq!(body["result"]["isError"] == true, is_error);
    }
    let body: Value = peer
        .post(Some(&sid), BOTH, &call(4, "get_time", json!({})))
        .await
        .json()
        .await
        .unwrap();
    assert!(text(&body["result"]).starts_with("Current time: "));
    peer.handle.shutdown().await.unwrap();
}
