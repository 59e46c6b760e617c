//! 2026-07-28 through `/mcp`: no session, headers checked against the body and forwarded,
//! the spec's statuses, 405 for GET and DELETE, `input_required` round trips passed through,
//! and the era probe next to 2025-11-25 sessions on the same endpoint.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::common::{client, test_config, Proxy};
use super::fake::{init_result, initialize, mcp_post, FakeServer, Sse, BOTH};

const V2026: &str = "2026-07-28";
const BOTH_ERAS: &[&str] = &["2025-11-25", V2026];

/// A 2026-07-28 request: `_meta` in its params.
fn modern(id: Value, method: &str, mut params: Value) -> Value {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": V2026,
        "io.modelcontextprotocol/clientCapabilities": {}
    });
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

fn tool_call(id: Value, name: &str, extra: Value) -> Value {
    let mut params = json!({"name": name, "arguments": {}});
    if let (Some(p), Value::Object(extra)) = (params.as_object_mut(), extra) {
        p.extend(extra);
    }
    modern(id, "tools/call", params)
}

/// POSTs `body` to `/mcp` with the given routing headers (`None`: left out).
fn post(
    http: &reqwest::Client,
    proxy: &Proxy,
    accept: &str,
    body: &Value,
    headers: [Option<&str>; 3],
) -> reqwest::RequestBuilder {
    let mut req = mcp_post(http, &proxy.url("/mcp"), accept, None, body);
    for (name, value) in ["mcp-protocol-version", "mcp-method", "mcp-name"]
        .into_iter()
        .zip(headers)
    {
        if let Some(v) = value {
            req = req.header(name, v);
        }
    }
    req
}

/// The routing headers that mirror `body`.
fn mirrored(body: &Value) -> [Option<&str>; 3] {
    [
        Some(V2026),
        body["method"].as_str(),
        body["params"]["name"].as_str(),
    ]
}

async fn json_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    assert_eq!(resp.headers()["content-type"], "application/json");
    (status, resp.json().await.unwrap())
}

/// Sends `body` while `server` answers its item with `answer(item)`; returns the client's
/// response and the item.
async fn exchange(
    proxy: &Proxy,
    server: &FakeServer,
    accept: &str,
    body: &Value,
    answer: impl FnOnce(&Value) -> Value,
) -> (reqwest::Response, Value) {
    let http = client();
    let call = post(&http, proxy, accept, body, mirrored(body)).send();
    let serve = async {
        let item = server.next_item(proxy).await;
        let response = answer(&item);
        let (s, v) = server
            .post(
                proxy,
                json!({"request_id": item["request_id"], "response": response}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        item
    };
    let (resp, item) = tokio::join!(call, serve);
    (resp.unwrap(), item)
}

#[tokio::test]
async fn requests_go_without_a_session_and_carry_their_headers() {
    let proxy = Proxy::start(test_config()).await;
    let server = FakeServer::register(&proxy, None, BOTH_ERAS).await;
    let body = tool_call(json!("a-1"), "echo", json!({}));
    let (resp, item) = exchange(&proxy, &server, BOTH, &body, |item| {
        json!({"jsonrpc": "2.0", "id": item["request"]["id"],
               "result": {"content": [], "resultType": "complete"}})
    })
    .await;
    assert!(resp.headers().get("mcp-session-id").is_none());
    let (status, v) = json_of(resp).await;
    assert_eq!(status, 200);
    assert_eq!(v["id"], "a-1");
    assert_eq!(v["result"]["resultType"], "complete");
    assert!(item.get("client_session").is_none(), "{item}");
    assert_eq!(item["request"], body, "the body as sent");
    assert_eq!(
        item["headers"],
        json!({"mcp-protocol-version": V2026, "mcp-method": "tools/call", "mcp-name": "echo"})
    );
    proxy.stop().await;
}

#[tokio::test]
async fn headers_that_disagree_with_the_body_get_400_and_reach_no_server() {
    let proxy = Proxy::start(test_config()).await;
    let server = FakeServer::register(&proxy, None, BOTH_ERAS).await;
    let http = client();
    let body = tool_call(json!(5), "echo", json!({}));
    let cases = [
        [Some(V2026), Some("tools/list"), Some("echo")],
        [Some(V2026), None, Some("echo")],
        [Some(V2026), Some("tools/call"), Some("other")],
        [Some(V2026), Some("tools/call"), None],
        [None, Some("tools/call"), Some("echo")],
        [Some("2025-11-25"), Some("tools/call"), Some("echo")],
    ];
    for headers in cases {
        let resp = post(&http, &proxy, BOTH, &body, headers)
            .send()
            .await
            .unwrap();
        let (status, v) = json_of(resp).await;
        assert_eq!(
            (status, &v["error"]["code"], &v["id"]),
            (400, &json!(-32020), &json!(5)),
            "{headers:?}"
        );
    }
    let mut later = body.clone();
    later["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2099-01-01");
    let resp = post(
        &http,
        &proxy,
        BOTH,
        &later,
        [Some("2099-01-01"), Some("tools/call"), Some("echo")],
    )
    .send()
    .await
    .unwrap();
    let (status, v) = json_of(resp).await;
    assert_eq!((status, &v["error"]["code"]), (400, &json!(-32022)));
    assert_eq!(v["error"]["data"]["requested"], "2099-01-01");
    let supported = v["error"]["data"]["supported"].as_array().unwrap();
    assert!(supported.contains(&json!(V2026)) && supported.contains(&json!("2025-11-25")));
    assert!(server.queue_is_empty(&proxy).await, "nothing was forwarded");
    proxy.stop().await;
}

#[tokio::test]
async fn errors_get_the_specs_statuses_in_json_or_deferred_sse() {
    let proxy = Proxy::start(test_config()).await;
    let server = FakeServer::register(&proxy, None, BOTH_ERAS).await;
    for accept in [BOTH, "application/json"] {
        let body = modern(json!(9), "no/such", json!({}));
        let (resp, _) = exchange(&proxy, &server, accept, &body, |item| {
            json!({"jsonrpc": "2.0", "id": item["request"]["id"],
                   "error": {"code": -32601, "message": "Method not found"}})
        })
        .await;
        let (status, v) = json_of(resp).await;
        assert_eq!(
            (status, &v["error"]["code"], &v["id"]),
            (404, &json!(-32601), &json!(9)),
            "{accept}"
        );
        let body = tool_call(json!(10), "nope", json!({}));
        let (resp, _) = exchange(&proxy, &server, accept, &body, |item| {
            json!({"jsonrpc": "2.0", "id": item["request"]["id"],
                   "error": {"code": -32602, "message": "Unknown tool"}})
        })
        .await;
        assert_eq!(json_of(resp).await.0, 400, "{accept}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn progress_before_the_answer_commits_to_sse() {
    let proxy = Proxy::start(test_config()).await;
    let server = FakeServer::register(&proxy, None, BOTH_ERAS).await;
    let http = client();
    let mut body = tool_call(json!(3), "slow", json!({}));
    body["params"]["_meta"]["progressToken"] = json!("t");
    let call = post(&http, &proxy, BOTH, &body, mirrored(&body)).send();
    let serve = async {
        let item = server.next_item(&proxy).await;
        let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress",
                              "params": {"progressToken": "t", "progress": 1}});
        let (s, _) = server
            .post(
                &proxy,
                json!({"request_id": item["request_id"], "message": progress}),
            )
            .await;
        assert_eq!(s, 200);
        item
    };
    let (resp, item) = tokio::join!(call, serve);
    let mut sse = Sse::new(resp.unwrap());
    let (_, first) = sse.message().await.unwrap();
    assert_eq!(first["method"], "notifications/progress");
    server
        .answer(
            &proxy,
            &item,
            json!({"content": [], "resultType": "complete"}),
        )
        .await;
    let (_, last) = sse.message().await.unwrap();
    assert_eq!(
        (&last["id"], &last["result"]["resultType"]),
        (&json!(3), &json!("complete"))
    );
    assert!(
        sse.message().await.is_none(),
        "the stream ends after the answer"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn input_required_round_trips_pass_through() {
    let proxy = Proxy::start(test_config()).await;
    let server = FakeServer::register(&proxy, None, BOTH_ERAS).await;
    let first = tool_call(json!(1), "book", json!({}));
    let asked = json!({"resultType": "input_required", "requestState": "opaque-1",
        "inputRequests": {"confirm": {"method": "elicitation/create",
            "params": {"message": "Sure?", "requestedSchema": {"type": "object"}}}}});
    let (resp, _) = exchange(
        &proxy,
        &server,
        BOTH,
        &first,
        |item| json!({"jsonrpc": "2.0", "id": item["request"]["id"], "result": asked.clone()}),
    )
    .await;
    let (status, v) = json_of(resp).await;
    assert_eq!((status, &v["result"]), (200, &asked));
    // The retry carries the answers and the state; the server sees them as sent.
    let retry = tool_call(
        json!(2),
        "book",
        json!({"requestState": "opaque-1",
               "inputResponses": {"confirm": {"action": "accept", "content": {}}}}),
    );
    let (resp, item) = exchange(&proxy, &server, BOTH, &retry, |item| {
        json!({"jsonrpc": "2.0", "id": item["request"]["id"],
               "result": {"content": [{"type": "text", "text": "booked"}], "resultType": "complete"}})
    })
    .await;
    assert_eq!(item["request"], retry);
    let (status, v) = json_of(resp).await;
    assert_eq!(
        (status, &v["result"]["resultType"]),
        (200, &json!("complete"))
    );
    proxy.stop().await;
}

#[tokio::test]
async fn get_and_delete_are_not_allowed_in_this_era() {
    let proxy = Proxy::start(test_config()).await;
    let http = client();
    let get = http
        .get(proxy.url("/mcp"))
        .header("accept", "text/event-stream")
        .header("mcp-protocol-version", V2026)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
    assert_eq!(get.headers()["allow"], "POST");
    let delete = http
        .delete(proxy.url("/servers/files/mcp"))
        .header("mcp-protocol-version", V2026)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 405);
    proxy.stop().await;
}

#[tokio::test]
async fn the_probe_falls_back_at_once_and_both_eras_share_the_endpoint() {
    let proxy = Proxy::start(test_config()).await;
    let old = FakeServer::register(&proxy, Some("old"), &["2025-11-25"]).await;
    let http = client();
    let discover = modern(json!(0), "server/discover", json!({}));
    let started = Instant::now();
    let resp = mcp_post(&http, &proxy.url("/servers/old/mcp"), BOTH, None, &discover)
        .header("mcp-protocol-version", V2026)
        .header("mcp-method", "server/discover")
        .send()
        .await
        .unwrap();
    let (status, v) = json_of(resp).await;
    assert_eq!(
        (status, &v["error"]["code"], &v["id"]),
        (400, &json!(-32022), &json!(0))
    );
    assert!(
        v["error"].get("data").is_none(),
        "a plain error: the client falls back"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(old.queue_is_empty(&proxy).await);
    // The fallback: initialize on the same endpoint opens a 2025-11-25 session.
    let call = mcp_post(
        &http,
        &proxy.url("/servers/old/mcp"),
        BOTH,
        None,
        &initialize(1),
    )
    .send();
    let serve = async {
        let item = old.next_item(&proxy).await;
        old.answer(&proxy, &item, init_result()).await;
    };
    let (resp, ()) = tokio::join!(call, serve);
    let resp = resp.unwrap();
    assert!(resp.headers().get("mcp-session-id").is_some());

    // A mixed pool: stateless requests go to the member that speaks 2026-07-28, whatever
    // member takes the pool's sessionless traffic.
    let new = FakeServer::register(&proxy, Some("old"), BOTH_ERAS).await;
    for id in 1..=3 {
        let body = tool_call(json!(id), "echo", json!({}));
        let call = mcp_post(&http, &proxy.url("/servers/old/mcp"), BOTH, None, &body)
            .header("mcp-protocol-version", V2026)
            .header("mcp-method", "tools/call")
            .header("mcp-name", "echo")
            .send();
        let serve = async {
            let item = new.next_item(&proxy).await;
            new.answer(&proxy, &item, json!({"content": []})).await;
        };
        let (resp, ()) = tokio::join!(call, serve);
        assert_eq!(resp.unwrap().status(), 200);
    }
    assert!(old.queue_is_empty(&proxy).await);
    proxy.stop().await;
}
