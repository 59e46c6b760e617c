//! The audit log, field by field: a successful call, a failed one (the server's JSON-RPC
//! error, no server at all), one refused by auth, one refused by the rate limit; arguments
//! and results never recorded unless the operator opts in, and then cut at the cap.

use std::path::{Path, PathBuf};

use mcp_proxy::audit::{AuditConfig, AuditLog};
use mcp_proxy::auth::{Auth, TokenKind, TokenSet};
use mcp_proxy::config::Rate;
use mcp_proxy::Config;
use serde_json::{json, Value};

use super::common::{echo, rpc, test_config, wait_until, Proxy};
use super::modern::ModernServer;

const CLIENT: &str = "client-audit-0123456789";
const SECRET: &str = "secret-argument-5f1c9e";

/// A fresh file path in the temp dir, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str) -> TempFile {
        let name = format!(
            "mcp-proxy-audit-{tag}-{}-{}",
            std::process::id(),
            uuid_ish()
        );
        TempFile(std::env::temp_dir().join(name))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn uuid_ish() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A config writing the audit log to `path`, with a client token bound to `alpha`.
fn audit_config(path: &Path, payloads: Option<usize>) -> Config {
    let mut tokens = TokenSet::new();
    tokens
        .add_spec(TokenKind::Client, &format!("{CLIENT}:alpha"), "test")
        .unwrap();
    Config {
        auth: Auth::with_tokens(tokens),
        audit: AuditConfig {
            log: Some(AuditLog::file(path).unwrap()),
            payloads,
        },
        ..test_config()
    }
}

/// The audit file's lines as JSON.
fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Waits until the file has `n` lines; returns them.
async fn wait_lines(path: &Path, n: usize) -> Vec<Value> {
    wait_until(&format!("{n} audit lines"), || async {
        lines(path).len() >= n
    })
    .await;
    lines(path)
}

/// The first 8 hex digits of the token's SHA-256, computed here independently of the proxy.
fn fingerprint(token: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    d.as_ref()[..4].iter().map(|b| format!("{b:02x}")).collect()
}

async fn post_with(token: Option<&str>, url: &str, body: &Value) -> (u16, String, usize) {
    let mut req = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let len = text.len();
    (status, text, len)
}

/// The fields every line has, whatever happened.
fn assert_common(line: &Value, route: &str) {
    let time = line["time"].as_str().unwrap();
    assert_eq!(time.len(), 24, "{time}");
    assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T', "{time}");
    assert_eq!(
        line["instance"],
        Value::Null,
        "a proxy alone has no instance id"
    );
    assert_eq!(line["relayed"], false);
    assert_eq!(line["peer"], "127.0.0.1");
    assert_eq!(line["route"], route);
    assert_eq!(line["http_method"], "POST");
    assert!(line["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(line.get("arguments").is_none() && line.get("result").is_none());
}

#[tokio::test]
async fn every_call_is_one_line_field_by_field() {
    let file = TempFile::new("fields");
    let proxy = Proxy::start(audit_config(&file.0, None)).await;
    let server = ModernServer::spawn(&proxy, Some("alpha"), 2).await;
    let url = proxy.url("/servers/alpha/message");

    // 1. A successful call.
    let call = rpc(
        json!(1),
        "tools/call",
        json!({"name": "echo", "arguments": {"text": SECRET}}),
    );
    let (status, text, out_len) = post_with(Some(CLIENT), &url, &call).await;
    assert_eq!(status, 200);
    assert!(
        text.contains(SECRET),
        "the answer carries the argument back: {text}"
    );
    let line = &wait_lines(&file.0, 1).await[0];
    assert_common(line, "/servers/{name}/message");
    assert_eq!(line["pool"], "alpha");
    assert_eq!(line["member"], 1, "the first registration's ordinal");
    assert_eq!(line["delivery"], "poll");
    assert_eq!(line["client"]["token"], fingerprint(CLIENT));
    assert_eq!(line["method"], "tools/call");
    assert_eq!(line["name"], "echo");
    assert_eq!(line["status"], 200);
    assert_eq!(line["error_code"], Value::Null);
    assert!(line["request_id"].as_str().unwrap().starts_with("r-"));
    assert_eq!(line["bytes_in"], call.to_string().len());
    assert_eq!(line["bytes_out"], out_len);

    // 2. A call the server fails: HTTP 200 with its JSON-RPC error.
    let bad = rpc(
        json!(2),
        "tools/call",
        json!({"name": "nope", "arguments": {}}),
    );
    let (status, _, _) = post_with(Some(CLIENT), &url, &bad).await;
    assert_eq!(status, 200);
    let line = &wait_lines(&file.0, 2).await[1];
    assert_common(line, "/servers/{name}/message");
    assert_eq!(
        (line["name"].as_str(), line["status"].as_u64()),
        (Some("nope"), Some(200))
    );
    assert_eq!(line["error_code"], -32602);
    assert_eq!(line["member"], 1);

    // 3. A call refused by auth: no token reaches nothing, but the line is written.
    let (status, _, _) =
        post_with(Some("wrong-token-0123456789"), &url, &echo(json!(3), "x")).await;
    assert_eq!(status, 401);
    let line = &wait_lines(&file.0, 3).await[2];
    assert_common(line, "/servers/{name}/message");
    assert_eq!(line["status"], 401);
    assert_eq!(
        line["client"]["token"],
        fingerprint("wrong-token-0123456789")
    );
    assert_eq!(line["request_id"], Value::Null);
    assert_eq!(
        (line["member"].clone(), line["delivery"].clone()),
        (Value::Null, Value::Null)
    );
    assert_eq!(line["error_code"], -32000, "the 401's JSON-RPC error");
    assert_eq!(line["method"], Value::Null, "the body was never read");

    // 4. No token at all, on the default pool.
    let (status, _, _) = post_with(None, &proxy.url("/message"), &echo(json!(4), "x")).await;
    assert_eq!(status, 401);
    let line = &wait_lines(&file.0, 4).await[3];
    assert_eq!(
        (line["pool"].as_str(), line["client"]["token"].clone()),
        (Some(""), Value::Null)
    );

    drop(server);
    proxy.stop().await;
    let all = std::fs::read_to_string(&file.0).unwrap();
    assert!(
        !all.contains(SECRET),
        "arguments and results never appear by default"
    );
    assert!(!all.contains(CLIENT), "nor the token");
    assert_eq!(all.lines().count(), 4, "one line per request: {all}");
}

#[tokio::test]
async fn no_server_rate_limits_and_the_forwarded_peer_are_recorded() {
    let file = TempFile::new("refusals");
    let config = Config {
        audit: AuditConfig {
            log: Some(AuditLog::file(&file.0).unwrap()),
            payloads: None,
        },
        client_rate: Rate {
            per_second: 0.001,
            burst: 2,
        },
        trusted_proxies: "127.0.0.1".parse().unwrap(),
        ..test_config()
    };
    let proxy = Proxy::start(config).await;
    let url = proxy.url("/servers/ghost/message");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut statuses = Vec::new();
    for id in 0..3 {
        let resp = http
            .post(&url)
            .header("content-type", "application/json")
            .header("x-forwarded-for", "198.51.100.1, 2001:db8::7")
            .body(echo(json!(id), "x").to_string())
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, [503, 503, 429]);
    let lines = wait_lines(&file.0, 3).await;
    for line in &lines {
        assert_eq!(
            line["peer"], "2001:db8::7",
            "the rightmost untrusted hop, whole"
        );
        assert_eq!(line["pool"], "ghost");
    }
    assert_eq!(lines[0]["error_code"], -32010, "no server");
    assert_eq!(lines[0]["method"], "tools/call");
    assert_eq!(lines[2]["status"], 429);
    assert_eq!(
        lines[2]["method"],
        Value::Null,
        "refused before the body was read"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn payloads_appear_only_when_opted_in_and_capped() {
    let file = TempFile::new("payloads");
    let proxy = Proxy::start(audit_config(&file.0, Some(24))).await;
    let server = ModernServer::spawn(&proxy, Some("alpha"), 1).await;
    let long = "y".repeat(100);
    let call = rpc(
        json!(1),
        "tools/call",
        json!({"name": "echo", "arguments": {"text": long}}),
    );
    let (status, _, _) = post_with(Some(CLIENT), &proxy.url("/servers/alpha/message"), &call).await;
    assert_eq!(status, 200);
    let line = &wait_lines(&file.0, 1).await[0];
    let args = &line["arguments"];
    assert!(args["text"].as_str().unwrap().len() <= 24);
    assert_eq!(args["truncated"], true);
    assert!(args["bytes"].as_u64().unwrap() > 100);
    assert!(args["text"].as_str().unwrap().starts_with("{\""));
    let result = &line["result"];
    assert!(
        result["text"].as_str().unwrap().starts_with("{\""),
        "{result}"
    );
    assert!(
        result["bytes"].as_u64().unwrap() > 100,
        "the answer echoes the 100 bytes"
    );
    assert_eq!(result["truncated"], true);
    drop(server);
    proxy.stop().await;
}

#[tokio::test]
async fn a_streamed_answer_is_recorded_when_its_stream_ends() {
    use super::fake::{mcp_post, open_session, FakeServer, BOTH};
    let file = TempFile::new("stream");
    let config = Config {
        audit: AuditConfig {
            log: Some(AuditLog::file(&file.0).unwrap()),
            payloads: None,
        },
        ..test_config()
    };
    let proxy = Proxy::start(config).await;
    let server = FakeServer::register(&proxy, None, &["2025-11-25"]).await;
    let session = open_session(&proxy, &server).await;
    let init = &wait_lines(&file.0, 1).await[0];
    assert_eq!(
        (init["method"].as_str(), init["status"].as_u64()),
        (Some("initialize"), Some(200))
    );
    assert_eq!(init["route"], "/mcp");

    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let call = rpc(
        json!(7),
        "resources/read",
        json!({"uri": "file:///etc/motd"}),
    );
    let pending = mcp_post(&http, &proxy.url("/mcp"), BOTH, Some(&session), &call).send();
    let answer = async {
        let item = server.next_item(&proxy).await;
        let error =
            json!({"jsonrpc": "2.0", "id": 7, "error": {"code": -32002, "message": "not found"}});
        let (s, _) = server
            .post(
                &proxy,
                json!({"request_id": item["request_id"], "response": error}),
            )
            .await;
        assert_eq!(s, 200);
    };
    let (resp, ()) = tokio::join!(pending, answer);
    let resp = resp.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let body = resp.text().await.unwrap();
    let line = &wait_lines(&file.0, 2).await[1];
    assert_eq!(line["method"], "resources/read");
    assert_eq!(line["name"], "file:///etc/motd");
    assert_eq!(line["status"], 200);
    assert_eq!(
        line["error_code"], -32002,
        "read from the stream's final event"
    );
    assert_eq!(line["bytes_out"], body.len());
    assert_eq!(line["member"], 1);
    proxy.stop().await;
}
