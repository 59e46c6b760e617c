//! What a web page cannot do: post to the client routes from a foreign `Origin`, skip the
//! CORS preflight with a `text/plain` body, or reach `/mcp` through a rebinding name.
//! Every refusal comes before routing: with no server registered, a request that got
//! through would be answered 503.

use serde_json::Value;

use super::common::{client, echo, test_config, Proxy};

async fn post(proxy: &Proxy, path: &str, headers: &[(&str, &str)], body: &Value) -> (u16, Value) {
    let mut req = client().post(proxy.url(path)).body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn a_foreign_origin_cannot_post_to_message_in_any_content_type() {
    let proxy = Proxy::start(test_config()).await;
    let call = echo(serde_json::json!(1), "hi");
    for ct in ["text/plain", "application/json"] {
        for path in ["/message", "/servers/alpha/message", "/mcp"] {
            let (status, body) = post(
                &proxy,
                path,
                &[("origin", "http://evil.example"), ("content-type", ct)],
                &call,
            )
            .await;
            assert_eq!(status, 403, "{path} {ct}: {body}");
            assert_eq!(body["error"]["code"], -32000, "{body}");
        }
    }
}

#[tokio::test]
async fn a_body_not_declared_json_gets_415_on_every_client_post_route() {
    let proxy = Proxy::start(test_config()).await;
    let call = echo(serde_json::json!(1), "hi");
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        for path in [
            "/message",
            "/servers/alpha/message",
            "/mcp",
            "/servers/alpha/mcp",
        ] {
            let mut headers = vec![("accept", "application/json, text/event-stream")];
            if let Some(ct) = ct {
                headers.push(("content-type", ct));
            }
            let (status, body) = post(&proxy, path, &headers, &call).await;
            assert_eq!(status, 415, "{path} {ct:?}: {body}");
            assert_eq!(body["error"]["code"], -32600, "{body}");
        }
    }
}

/// Refused before its body is read, so the connection closes: the answer says so, and a
/// client does not send its next request on it.
#[tokio::test]
async fn refusals_before_the_body_is_read_close_the_connection_and_say_so() {
    let proxy = Proxy::start(test_config()).await;
    let call = echo(serde_json::json!(1), "hi").to_string();
    for (headers, want) in [
        (
            vec![
                ("origin", "http://evil.example"),
                ("content-type", "application/json"),
            ],
            403,
        ),
        (vec![("content-type", "text/plain")], 415),
    ] {
        let mut req = client().post(proxy.url("/message")).body(call.clone());
        for (k, v) in &headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), want);
        assert_eq!(resp.headers()["connection"], "close", "{want}");
    }
    // A request read whole keeps its connection, whatever the answer (503: no server here).
    let resp = client()
        .post(proxy.url("/message"))
        .header("content-type", "application/json")
        .body(call)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert!(resp.headers().get("connection").is_none());
}

#[tokio::test]
async fn json_in_any_case_with_parameters_and_local_origins_get_through() {
    let proxy = Proxy::start(test_config()).await;
    let call = echo(serde_json::json!(1), "hi");
    for headers in [
        vec![("content-type", "Application/JSON; charset=UTF-8")],
        vec![
            ("content-type", "application/json"),
            ("origin", "http://localhost:6274"),
        ],
    ] {
        let (status, body) = post(&proxy, "/message", &headers, &call).await;
        assert_eq!(status, 503, "past the guard to 'no server': {body}");
    }
}

#[tokio::test]
async fn a_rebinding_name_cannot_reach_mcp_but_message_has_no_host_check() {
    let proxy = Proxy::start(test_config()).await;
    let call = echo(serde_json::json!(1), "hi");
    let host = format!("127.attacker.example:{}", proxy.addr.port());
    let origin = format!("http://{host}");
    let (status, _) = post(
        &proxy,
        "/mcp",
        &[
            ("host", host.as_str()),
            ("origin", origin.as_str()),
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
        ],
        &call,
    )
    .await;
    assert_eq!(status, 403);
    // The seed's clients reach /message by any name, without an Origin.
    let (status, _) = post(
        &proxy,
        "/message",
        &[
            ("host", host.as_str()),
            ("content-type", "application/json"),
        ],
        &call,
    )
    .await;
    assert_eq!(status, 503);
}
