//! `/mcp`: Streamable HTTP sessions, statuses, headers, streams, Host/Origin and CORS.

use std::time::Duration;

use mcp_proxy::Config;
use serde_json::{json, Value};

use super::common::{client, echo, test_config, wait_until, Proxy};
use super::fake::{
    init_result, initialize, mcp_post, open_session, open_session_at, FakeServer, Sse, BOTH,
};

async fn json_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    };
    (status, v)
}

#[tokio::test]
async fn initialize_mints_a_session_pins_it_and_forwards_it_with_headers() {
    let proxy = Proxy::start(test_config()).await;
    let server = FakeServer::register(&proxy, None, &["2025-11-25"]).await;
    let http = client();
    let call = mcp_post(
        &http,
        &proxy.url("/mcp"),
        "application/json",
        None,
        &initialize(1),
    )
    .send();
    let serve = async {
        let item = server.next_item(&proxy).await;
        server.answer(&proxy, &item, init_result()).await;
        item
    };
    let (resp, item) = tokio::join!(call, serve);
    let resp = resp.unwrap();
    let session = resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        session.len() == 34
            && session.starts_with("c-")
            && session[2..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{session}"
    );
    assert_eq!(
        item["client_session"],
        session.as_str(),
        "the item names the session"
    );
    let (status, body) = json_of(resp).await;
    assert_eq!(status, 200);
    assert_eq!(body["result"]["serverInfo"]["name"], "fake");

    // A later request carries the session and the forwarded headers.
    let call = mcp_post(
        &http,
        &proxy.url("/mcp"),
        "application/json",
        Some(&session),
        &echo(json!(2), "hi"),
    )
    .header("mcp-method", "tools/call")
    .header("mcp-name", "echo")
    .send();
    let serve = async {
        let item = server.next_item(&proxy).await;
        server.answer(&proxy, &item, json!({"ok": true})).await;
        item
    };
    let (resp, item) = tokio::join!(call, serve);
    assert_eq!(item["client_session"], session.as_str());
    assert_eq!(
        item["headers"],
        json!({"mcp-protocol-version": "2025-11-25", "mcp-method": "tools/call", "mcp-name": "echo"})
    );
    let (status, body) = json_of(resp.unwrap()).await;
    assert_eq!((status, &body["result"]), (200, &json!({"ok": true})));
    assert!(body["id"] == json!(2));
    proxy.stop().await;
}

#[tokio::test]
async fn missing_unknown_and_orphaned_sessions_and_bad_versions() {
    let proxy = Proxy::start(test_config()).await;
    let server = FakeServer::register(&proxy, None, &["2025-11-25"]).await;
    let http = client();
    let url = proxy.url("/mcp");
    let ping = json!({"jsonrpc": "2.0", "id": 5, "method": "ping"});

    // No session on a request other than initialize: 400.
    let (s, v) = json_of(
        mcp_post(&http, &url, BOTH, None, &ping)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, v["error"]["code"].as_i64()), (400, Some(-32600)), "{v}");
    assert_eq!(v["id"], 5);
    // Unknown or malformed session: 404, so the client re-initializes.
    for bad in ["c-00000000000000000000000000000000", "not a valid id"] {
        let resp = http
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", BOTH)
            .header("mcp-session-id", bad)
            .body(ping.to_string())
            .send()
            .await
            .unwrap();
        let (s, v) = json_of(resp).await;
        assert_eq!(
            (s, v["error"]["code"].as_i64()),
            (404, Some(-32001)),
            "{bad}: {v}"
        );
    }
    // An unsupported MCP-Protocol-Version: 400.
    let session = open_session(&proxy, &server).await;
    let resp = http
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", BOTH)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "1999-01-01")
        .body(ping.to_string())
        .send()
        .await
        .unwrap();
    let (s, v) = json_of(resp).await;
    assert_eq!((s, v["error"]["code"].as_i64()), (400, Some(-32022)), "{v}");
    assert_eq!(v["error"]["data"]["requested"], "1999-01-01", "{v}");
    assert!(v["error"]["data"]["supported"]
        .as_array()
        .unwrap()
        .contains(&json!("2025-11-25")));
    // A batch: 400 -32600.
    let (s, v) = json_of(
        mcp_post(&http, &url, BOTH, Some(&session), &json!([ping, ping]))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, v["error"]["code"].as_i64()), (400, Some(-32600)), "{v}");
    // Accept allowing neither: 406.
    let (s, _) = json_of(
        mcp_post(&http, &url, "text/html", Some(&session), &ping)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 406);
    // Its registration leaves: the session's next request gets 404.
    server.leave().await;
    let (s, v) = json_of(
        mcp_post(&http, &url, BOTH, Some(&session), &ping)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, v["error"]["code"].as_i64()), (404, Some(-32001)), "{v}");
    // No server at all: initialize gets 503.
    let (s, _) = json_of(
        mcp_post(&http, &url, BOTH, None, &initialize(1))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 503);
    proxy.stop().await;
}

#[tokio::test]
async fn accept_decides_json_or_an_sse_stream_with_event_ids() {
    let proxy = Proxy::start(test_config()).await;
    let server = FakeServer::register(&proxy, Some("files"), &["2025-11-25"]).await;
    let http = client();
    let url = proxy.url("/servers/files/mcp");
    // initialize as SSE: the session header comes with the stream.
    let resp = mcp_post(&http, &url, "text/event-stream", None, &initialize(1))
        .send()
        .await
        .unwrap();
    let session = resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let mut sse = Sse::new(resp);
    let priming = sse.priming().await;
    let item = server.next_item(&proxy).await;
    server.answer(&proxy, &item, init_result()).await;
    let (id, msg) = sse.message().await.unwrap();
    assert_eq!(msg["result"]["serverInfo"]["name"], "fake");
    assert_eq!(msg["id"], 1);
    assert_ne!(id, priming, "every event has its own id");
    assert!(
        sse.block().await.is_none(),
        "the stream ends after the answer"
    );

    // Both listed: SSE is preferred (progress can travel first).
    let resp = mcp_post(&http, &url, BOTH, Some(&session), &echo(json!("a"), "x"))
        .send()
        .await
        .unwrap();
    let mut sse = Sse::new(resp);
    let item = server.next_item(&proxy).await;
    server.answer(&proxy, &item, json!({"n": 1})).await;
    assert_eq!(sse.message().await.unwrap().1["result"], json!({"n": 1}));

    // JSON only: one JSON body.
    let call = mcp_post(
        &http,
        &url,
        "application/json",
        Some(&session),
        &echo(json!("b"), "x"),
    )
    .send();
    let serve = async {
        let item = server.next_item(&proxy).await;
        server.answer(&proxy, &item, json!({"n": 2})).await;
    };
    let (resp, ()) = tokio::join!(call, serve);
    let resp = resp.unwrap();
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert!(
        resp.headers().get("mcp-session-id").is_none(),
        "only on initialize"
    );
    let (s, v) = json_of(resp).await;
    assert_eq!(
        (s, &v["result"], &v["id"]),
        (200, &json!({"n": 2}), &json!("b"))
    );
    proxy.stop().await;
}

#[tokio::test]
async fn notifications_get_202_and_delete_ends_the_session_at_the_server() {
    let proxy = Proxy::start(test_config()).await;
    let server = FakeServer::register(&proxy, None, &["2025-11-25"]).await;
    let session = open_session(&proxy, &server).await;
    let http = client();
    let url = proxy.url("/mcp");
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let (s, v) = json_of(
        mcp_post(&http, &url, BOTH, Some(&session), &note)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, v), (202, Value::Null));
    let item = server.next_item(&proxy).await;
    assert_eq!(item["request"], note);
    assert_eq!(item["client_session"], session.as_str());
    // The server acknowledges the notification with null.
    let (s, _) = server
        .post(
            &proxy,
            json!({"request_id": item["request_id"], "response": null}),
        )
        .await;
    assert_eq!(s, 200);

    let delete = |s: &str| http.delete(&url).header("mcp-session-id", s).send();
    assert_eq!(delete(&session).await.unwrap().status(), 204);
    let item = server.next_item(&proxy).await;
    assert_eq!(
        item,
        json!({"kind": "session_closed", "client_session": session})
    );
    assert_eq!(delete(&session).await.unwrap().status(), 404);
    assert_eq!(http.delete(&url).send().await.unwrap().status(), 400);
    let (s, _) = json_of(
        mcp_post(&http, &url, BOTH, Some(&session), &echo(json!(1), "x"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 404);
    proxy.stop().await;
}

#[tokio::test]
async fn client_sessions_are_capped_per_registration_and_overall_with_503() {
    let config = Config {
        max_sessions: 3,
        max_sessions_per_registration: 2,
        ..test_config()
    };
    let proxy = Proxy::start(config).await;
    let a = FakeServer::register(&proxy, None, &["2025-11-25"]).await;
    let b = FakeServer::register(&proxy, Some("b"), &["2025-11-25"]).await;
    let http = client();
    let refused = |path: &str| mcp_post(&http, &proxy.url(path), BOTH, None, &initialize(7)).send();
    let check_503 = |resp: reqwest::Response| async move {
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()["retry-after"], "1");
        let (_, v) = json_of(resp).await;
        assert_eq!(v["id"], 7);
        assert_eq!(v["error"]["code"], -32000);
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too many client sessions"));
    };
    let first = open_session(&proxy, &a).await;
    open_session(&proxy, &a).await;
    // The default pool's only member is full: refused at once, nothing reaches the server.
    check_503(refused("/mcp").await.unwrap()).await;
    open_session_at(&proxy, &b, "/servers/b/mcp").await;
    // Three sessions in all: the proxy is full, though `b` has room.
    check_503(refused("/servers/b/mcp").await.unwrap()).await;
    assert_eq!(proxy.state.broker.stats().sessions, 3);
    // Ending one makes room again.
    let url = proxy.url("/mcp");
    let resp = http
        .delete(&url)
        .header("mcp-session-id", &first)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    open_session_at(&proxy, &b, "/servers/b/mcp").await;
    assert_eq!(
        proxy.state.broker.servers()[1].members[0].client_sessions,
        2
    );
    proxy.stop().await;
}

#[tokio::test]
async fn legacy_registrations_are_pinned_but_get_plain_items() {
    let proxy = Proxy::start(test_config()).await;
    let http = client();
    let legacy = super::common::register(&http, &proxy, json!({"type": "mcp_server"})).await;
    let url = proxy.url("/mcp");
    let call = mcp_post(&http, &url, "application/json", None, &initialize(1)).send();
    let serve = async {
        let (_, item) = super::common::poll(&http, &proxy, &legacy, 2).await;
        let answer = json!({"jsonrpc": "2.0", "id": 1, "result": init_result()});
        super::common::respond(
            &http,
            &proxy,
            &legacy,
            json!({"request_id": item["request_id"], "response": answer}),
        )
        .await;
        item
    };
    let (resp, item) = tokio::join!(call, serve);
    let resp = resp.unwrap();
    assert!(resp.headers().contains_key("mcp-session-id"));
    let session = resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        item.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["request", "request_id"],
        "no client_session, no headers for the seed's reverse client"
    );
    assert_eq!(
        http.delete(&url)
            .header("mcp-session-id", &session)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let (status, _) = super::common::poll(&http, &proxy, &legacy, 0).await;
    assert_eq!(status, 204, "no session_closed for a legacy registration");
    proxy.stop().await;
}

#[tokio::test]
async fn get_stream_carries_session_messages_resumes_and_keeps_alive() {
    let proxy = Proxy::start(test_config()).await;
    let server = FakeServer::register(&proxy, None, &["2025-11-25"]).await;
    let session = open_session(&proxy, &server).await;
    let http = client();
    let url = proxy.url("/mcp");
    let get = |last: Option<&str>| {
        let mut req = http
            .get(&url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", "2025-11-25");
        if let Some(id) = last {
            req = req.header("last-event-id", id);
        }
        req.send()
    };
    // Accept without SSE: 406; no session: 400.
    let resp = http
        .get(&url)
        .header("accept", "application/json")
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 406);
    let resp = http
        .get(&url)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    let mut sse = Sse::new(get(None).await.unwrap());
    sse.priming().await;
    let changed = json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"});
    let (s, v) = server
        .post(
            &proxy,
            json!({"client_session": session, "message": changed}),
        )
        .await;
    assert_eq!((s, v), (200, json!({"status": "ok"})));
    let (first_id, msg) = sse.message().await.unwrap();
    assert_eq!(msg, changed);
    // Keep-alive comments on a quiet stream (200 ms in the test configuration).
    let block = sse.block().await.unwrap();
    assert!(block.comment, "{block:?}");

    // The client goes away; a message arrives meanwhile; it resumes after the first event.
    drop(sse);
    wait_until("the GET stream to detach", || async {
        proxy.state.broker.stats().attached == 0
    })
    .await;
    let progress = json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "x"}});
    server
        .post(
            &proxy,
            json!({"client_session": session, "message": progress}),
        )
        .await;
    let mut sse = Sse::new(get(Some(&first_id)).await.unwrap());
    let (_, msg) = sse.message().await.unwrap();
    assert_eq!(msg, progress, "replayed from the log");
    // A Last-Event-ID this session cannot replay: 400.
    let resp = get(Some("p999.1")).await.unwrap();
    assert_eq!(resp.status(), 400);
    // A second GET takes the stream over: the first one ends.
    let mut second = Sse::new(get(None).await.unwrap());
    second.priming().await;
    loop {
        match sse.block().await {
            None => break,
            Some(b) => assert!(b.comment || b.data.is_empty(), "{b:?}"),
        }
    }
    proxy.stop().await;
}

#[tokio::test]
async fn idle_sessions_end_and_the_server_is_told() {
    let config = Config {
        session_idle: Duration::from_millis(200),
        ..test_config()
    };
    let proxy = Proxy::start(config).await;
    let server = FakeServer::register(&proxy, None, &["2025-11-25"]).await;
    let session = open_session(&proxy, &server).await;
    let item = server.next_item(&proxy).await;
    assert_eq!(
        item,
        json!({"kind": "session_closed", "client_session": session})
    );
    let http = client();
    let (s, _) = json_of(
        mcp_post(
            &http,
            &proxy.url("/mcp"),
            BOTH,
            Some(&session),
            &echo(json!(1), "x"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(s, 404);
    proxy.stop().await;
}

#[tokio::test]
async fn the_era_probe_fails_fast_on_mcp() {
    let proxy = Proxy::start(test_config()).await;
    let _server = FakeServer::register(&proxy, None, &["2025-11-25"]).await;
    let http = client();
    let discover = json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientCapabilities": {}}}});
    let resp = http
        .post(proxy.url("/mcp"))
        .header("content-type", "application/json")
        .header("accept", BOTH)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "server/discover")
        .body(discover.to_string())
        .send()
        .await
        .unwrap();
    let (s, v) = json_of(resp).await;
    assert_eq!(
        (s, v["error"]["code"].as_i64(), &v["id"]),
        (400, Some(-32022), &json!(1))
    );
    proxy.stop().await;
}

#[tokio::test]
async fn host_is_checked_on_mcp_only() {
    let config = Config {
        allowed_hosts: vec!["mcp.example.com".into()],
        ..test_config()
    };
    let proxy = Proxy::start(config).await;
    let http = client();
    let url = proxy.url("/mcp");
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
    let status = |host: Option<&'static str>, origin: Option<&'static str>| {
        let mut req = http
            .post(&url)
            .header("accept", BOTH)
            .header("content-type", "application/json")
            .body(ping.clone());
        if let Some(h) = host {
            req = req.header("host", h);
        }
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        async move { req.send().await.unwrap() }
    };
    let resp = status(Some("evil.example"), None).await;
    let (s, v) = json_of(resp).await;
    assert_eq!((s, v["error"]["code"].as_i64()), (403, Some(-32000)), "{v}");
    assert_eq!(
        status(None, Some("http://evil.example")).await.status(),
        403
    );
    assert_eq!(status(None, Some("null")).await.status(), 403);
    // Allowed: loopback (the default Host), the listed name, and a listed origin: the
    // request then gets past the check (400: no session).
    assert_eq!(status(None, None).await.status(), 400);
    assert_eq!(
        status(Some("mcp.example.com:443"), None).await.status(),
        400
    );
    assert_eq!(
        status(None, Some("https://mcp.example.com")).await.status(),
        400
    );
    assert_eq!(
        status(None, Some("http://localhost:6274")).await.status(),
        400
    );
    // /message has no Host check (the seed's client sends no Origin, and a public Host).
    let resp = http
        .post(proxy.url("/message"))
        .header("content-type", "application/json")
        .header("host", "evil.example")
        .body(ping.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    proxy.stop().await;
}

#[tokio::test]
async fn cors_preflight_and_exposed_session_header() {
    let http = client();
    // Default: no CORS headers at all.
    let proxy = Proxy::start(test_config()).await;
    let resp = http
        .post(proxy.url("/mcp"))
        .header("content-type", "application/json")
        .header("origin", "http://localhost:6274")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    proxy.stop().await;

    let config = Config {
        cors_origins: vec!["https://app.example".into()],
        ..test_config()
    };
    let proxy = Proxy::start(config).await;
    let resp = http
        .request(reqwest::Method::OPTIONS, proxy.url("/mcp"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "mcp-session-id, mcp-protocol-version, content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for name in [
        "mcp-session-id",
        "mcp-protocol-version",
        "last-event-id",
        "authorization",
        "content-type",
        "mcp-method",
        "mcp-name",
    ] {
        assert!(allowed.contains(name), "{name} in {allowed}");
    }
    // The browser origin passes the Origin check and sees Mcp-Session-Id.
    let _server = FakeServer::register(&proxy, None, &["2025-11-25"]).await;
    let resp = http
        .post(proxy.url("/mcp"))
        .header("content-type", "application/json")
        .header("origin", "https://app.example")
        .header("accept", BOTH)
        .body(json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "past the Origin check: no session");
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let exposed = resp.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("mcp-session-id"), "{exposed}");
    proxy.stop().await;
}
