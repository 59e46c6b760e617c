//! 2026-07-28 on the direct endpoint: no session, headers checked against the body, the spec's
//! statuses, 405 for GET and DELETE, and a closed response stream cancels.

use super::*;

const V2026: &str = "2026-07-28";

/// A 2026-07-28 request: `_meta` in its params.
fn modern(id: i64, method: &str, mut params: Value) -> Value {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": V2026,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "http-test", "version": "1"}
    });
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

impl Peer {
    /// POSTs `body` with the given routing headers (`None`: left out), no session.
    async fn post_modern(
        &self,
        accept: &str,
        body: &Value,
        version: Option<&str>,
        method: Option<&str>,
        name: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .post(self.url())
            .header("accept", accept)
            .header("content-type", "application/json")
            .body(body.to_string());
        for (header, value) in [
            ("mcp-protocol-version", version),
            ("mcp-method", method),
            ("mcp-name", name),
        ] {
            if let Some(v) = value {
                req = req.header(header, v);
            }
        }
        within(req.send()).await.unwrap()
    }

    /// POSTs a well-formed 2026-07-28 request: the headers mirror the body.
    async fn send_modern(&self, accept: &str, body: &Value) -> reqwest::Response {
        let method = body["method"].as_str().unwrap();
        let name = body["params"]["name"]
            .as_str()
            .or(body["params"]["uri"].as_str());
        self.post_modern(accept, body, Some(V2026), Some(method), name)
            .await
    }
}

async fn error_of(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    assert_eq!(content_type(&r), JSON_ONLY);
    let body: Value = r.json().await.unwrap();
    (status, body)
}

#[tokio::test]
async fn requests_are_served_without_a_session_in_json_or_sse() {
    let (_, _, peer) = start_default().await;
    let echo = modern(
        1,
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "new era"}}),
    );
    let r = peer.send_modern(BOTH, &echo).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("mcp-session-id").is_none());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["id"], 1);
    assert_eq!(text(&body["result"]), "new era");
    assert_eq!(body["result"]["resultType"], "complete");

    let r = peer.send_modern(SSE_ONLY, &echo).await;
    let mut sse = Sse::new(r);
    assert_eq!(text(&sse.next().await.json()["result"]), "new era");
    sse.ended().await;

    let discover = modern(2, "server/discover", json!({}));
    let r = peer.send_modern(BOTH, &discover).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let versions = body["result"]["supportedVersions"].as_array().unwrap();
    assert!(versions.contains(&json!(V2026)) && versions.contains(&json!("2025-11-25")));
    assert_eq!(body["result"]["resultType"], "complete");
}

#[tokio::test]
async fn both_eras_share_the_endpoint() {
    let (server, _, peer) = start_default().await;
    let sid = peer.init(json!({})).await;
    let old = peer
        .post(
            Some(&sid),
            JSON_ONLY,
            &call(1, "echo", json!({"text": "old"})),
        )
        .await;
    let new = peer
        .send_modern(
            JSON_ONLY,
            &modern(
                1,
                "tools/call",
                json!({"name": "echo", "arguments": {"text": "new"}}),
            ),
        )
        .await;
    assert_eq!(text(&old.json::<Value>().await.unwrap()["result"]), "old");
    let new: Value = new.json().await.unwrap();
    assert_eq!(text(&new["result"]), "new");
    assert_eq!(new["result"]["resultType"], "complete");
    assert_eq!(
        server.session_count(),
        1,
        "the stateless request opened none"
    );
}

#[tokio::test]
async fn headers_that_disagree_with_the_body_get_400_header_mismatch() {
    let (_, _, peer) = start_default().await;
    let echo = modern(
        7,
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "x"}}),
    );
    let cases = [
        (Some(V2026), Some("tools/list"), Some("echo"), "Mcp-Method"),
        (Some(V2026), None, Some("echo"), "Mcp-Method"),
        (
            Some(V2026),
            Some("tools/call"),
            Some("calculator"),
            "Mcp-Name",
        ),
        (Some(V2026), Some("tools/call"), None, "Mcp-Name"),
        (
            None,
            Some("tools/call"),
            Some("echo"),
            "MCP-Protocol-Version",
        ),
        (
            Some("2025-11-25"),
            Some("tools/call"),
            Some("echo"),
            "MCP-Protocol-Version",
        ),
    ];
    for (version, method, name, named) in cases {
        let r = peer.post_modern(BOTH, &echo, version, method, name).await;
        let (status, body) = error_of(r).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{named}");
        assert_eq!(body["id"], 7, "{named}");
        assert_eq!(body["error"]["code"], -32020, "{named}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(named),
            "{body}"
        );
    }
    // A header claiming 2026-07-28 for a body without `_meta` is a mismatch too.
    let plain = call(8, "echo", json!({"text": "x"}));
    let r = peer
        .post_modern(BOTH, &plain, Some(V2026), Some("tools/call"), Some("echo"))
        .await;
    assert_eq!(error_of(r).await.1["error"]["code"], -32020);
    // A base64-wrapped name matches its decoded value.
    let r = peer
        .post_modern(
            BOTH,
            &echo,
            Some(V2026),
            Some("tools/call"),
            Some("=?base64?ZWNobw==?="),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_unsupported_version_gets_400_with_the_supported_list() {
    let (_, _, peer) = start_default().await;
    let mut discover = modern(3, "server/discover", json!({}));
    discover["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2099-01-01");
    let r = peer
        .post_modern(
            BOTH,
            &discover,
            Some("2099-01-01"),
            Some("server/discover"),
            None,
        )
        .await;
    let (status, body) = error_of(r).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], -32022);
    assert_eq!(body["error"]["data"]["requested"], "2099-01-01");
    let supported = body["error"]["data"]["supported"].as_array().unwrap();
    assert!(supported.contains(&json!(V2026)) && supported.contains(&json!("2025-11-25")));
}

#[tokio::test]
async fn errors_carry_the_specs_statuses() {
    let (_, _, peer) = start_default().await;
    for accept in [BOTH, JSON_ONLY] {
        let r = peer
            .send_modern(accept, &modern(4, "no/such", json!({})))
            .await;
        let (status, body) = error_of(r).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{accept}");
        assert_eq!(body["error"]["code"], -32601);
        assert_eq!(body["id"], 4);
    }
    let unknown_tool = modern(5, "tools/call", json!({"name": "nope", "arguments": {}}));
    let (status, body) = error_of(peer.send_modern(BOTH, &unknown_tool).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], -32602);
    // Handshake-only methods do not exist in this era.
    let set_level = modern(6, "logging/setLevel", json!({"level": "info"}));
    let (status, _) = error_of(peer.send_modern(BOTH, &set_level).await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn get_and_delete_are_not_allowed_in_this_era() {
    let (_, _, peer) = start_default().await;
    let get = peer
        .http
        .get(peer.url())
        .header("accept", SSE_ONLY)
        .header("mcp-protocol-version", V2026);
    let r = within(get.send()).await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()["allow"], "POST");
    let delete = peer
        .http
        .delete(peer.url())
        .header("mcp-protocol-version", V2026);
    let r = within(delete.send()).await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn closing_the_response_stream_cancels_the_request() {
    let (_, probes, peer) = start_default().await;
    for (id, accept) in [(11, JSON_ONLY), (12, SSE_ONLY)] {
        let slow = modern(id, "tools/call", json!({"name": "slow", "arguments": {}}));
        let client = peer.http.clone();
        let url = peer.url();
        let request = tokio::spawn(async move {
            let r = client
                .post(url)
                .header("accept", accept)
                .header("content-type", "application/json")
                .header("mcp-protocol-version", V2026)
                .header("mcp-method", "tools/call")
                .header("mcp-name", "slow")
                .body(slow.to_string())
                .send()
                .await
                .unwrap();
            // Reading the body keeps an SSE stream open until the task is aborted.
            let _ = r.bytes().await;
        });
        assert_eq!(probes.started().await, json!(id));
        request.abort();
        assert_eq!(probes.cancelled().await, json!(id), "{accept}");
    }
}

#[tokio::test]
async fn notifications_get_202_without_a_session() {
    let (_, _, peer) = start_default().await;
    let note = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                      "params": {"requestId": 1}});
    let r = peer
        .post_modern(
            BOTH,
            &note,
            Some(V2026),
            Some("notifications/cancelled"),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}
