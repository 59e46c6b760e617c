//! 2026-07-28 requests: per-request `_meta`, `server/discover`, no handshake.

use serde_json::{json, Value};

use crate::common::*;

fn meta(version: &str) -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": version,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "new-client", "version": "2"}
    })
}

#[tokio::test]
async fn server_discover_describes_the_server() {
    let (server, _) = server();
    let r = ask(
        &server,
        None,
        req(1, "server/discover", json!({"_meta": meta("2026-07-28")})),
    )
    .await;
    let result = ok(&r);
    assert_eq!(
        result["supportedVersions"],
        json!([
            "2024-11-05",
            "2025-03-26",
            "2025-06-18",
            "2025-11-25",
            "2026-07-28"
        ])
    );
    assert_eq!(
        result["capabilities"]["tools"],
        json!({"listChanged": true})
    );
    assert_eq!(result["instructions"], "Use the tools.");
    assert_eq!(result["resultType"], "complete");
    assert_eq!(result["ttlMs"], 300_000);
    assert_eq!(result["cacheScope"], "public");
    assert_eq!(
        result["_meta"]["io.modelcontextprotocol/serverInfo"],
        json!({"name": "test-server", "version": "0.0.1"})
    );
}

#[tokio::test]
async fn server_discover_needs_no_session_even_without_meta() {
    let (server, _) = server();
    let r = ask(
        &server,
        Some("unknown"),
        req(1, "server/discover", json!({})),
    )
    .await;
    assert_eq!(ok(&r)["resultType"], "complete");
}

#[tokio::test]
async fn stateless_requests_need_no_handshake_or_session() {
    let (server, _) = server();
    let r = ask(
        &server,
        Some("never-seen"),
        req(1, "tools/list", json!({"_meta": meta("2026-07-28")})),
    )
    .await;
    let result = ok(&r);
    assert_eq!(result["resultType"], "complete");
    assert!(!result["tools"].as_array().unwrap().is_empty());
    // A cacheable list carries the era's caching directives: immediately stale, private.
    assert_eq!(
        (&result["ttlMs"], &result["cacheScope"]),
        (&json!(0), &json!("private"))
    );

    let r = ask(
        &server,
        None,
        req(
            2,
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "x"}, "_meta": meta("2026-07-28")}),
        ),
    )
    .await;
    assert_eq!(text(ok(&r)), "x");
    assert_eq!(ok(&r)["resultType"], "complete");
    assert!(
        ok(&r).get("ttlMs").is_none(),
        "a tool call is not cacheable"
    );
    assert_eq!(server.session_count(), 0);
}

#[tokio::test]
async fn an_unsupported_stateless_version_is_minus_32022() {
    let (server, _) = server();
    let r = ask(
        &server,
        None,
        req(1, "tools/list", json!({"_meta": meta("2027-01-01")})),
    )
    .await;
    let e = r.as_error().unwrap();
    assert_eq!(e.code.0, -32022);
    let data = e.data.as_ref().unwrap();
    assert!(data["supported"]
        .as_array()
        .unwrap()
        .contains(&json!("2026-07-28")));
    assert_eq!(data["requested"], "2027-01-01");
}

#[tokio::test]
async fn stateless_meta_without_capabilities_is_invalid_params() {
    let (server, _) = server();
    let params = json!({"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}});
    let r = ask(&server, None, req(1, "tools/list", params)).await;
    assert_eq!(err_code(&r), -32602);
}

#[tokio::test]
async fn handshake_methods_do_not_exist_statelessly() {
    let (server, _) = server();
    let r = ask(
        &server,
        None,
        req(
            1,
            "logging/setLevel",
            json!({"level": "info", "_meta": meta("2026-07-28")}),
        ),
    )
    .await;
    assert_eq!(err_code(&r), -32601);
}

#[tokio::test]
async fn stateless_logs_follow_the_request_log_level() {
    let (server, _) = server();
    let mut m = meta("2026-07-28");
    m["io.modelcontextprotocol/logLevel"] = json!("warning");
    m["progressToken"] = json!("tok");
    let client = Client::new(&server, None, |_, _| Ok(json!({})));
    let r = within(server.handle(
        None,
        req(1, "tools/call", json!({"name": "progress", "_meta": m})),
        client.outbound(),
    ))
    .await
    .unwrap();
    assert_eq!(
        text(ok(&r)),
        "progress sent: true true, logs sent: false true"
    );

    // Without a log level, a stateless request gets no log messages.
    let r = within(server.handle(
        None,
        req(
            2,
            "tools/call",
            json!({"name": "progress", "_meta": meta("2026-07-28")}),
        ),
        client.outbound(),
    ))
    .await
    .unwrap();
    assert_eq!(
        text(ok(&r)),
        "progress sent: false false, logs sent: false false"
    );
}
