//! Limits (413, 429 with Retry-After, queue full → 503, polls per registration) and the
//! metrics at `/metrics` moving as calls go through.

use mcp_proxy::auth::{Auth, TokenKind, TokenSet};
use mcp_proxy::limits::Rate;
use mcp_proxy::Config;
use serde_json::{json, Value};

use super::common::{client, echo, post, post_raw, test_config, wait_until, Proxy};
use super::fake::FakeServer;
use super::modern::ModernServer;

#[tokio::test]
async fn over_the_client_rate_is_429_with_retry_after_and_servers_keep_their_budget() {
    let config = Config {
        client_rate: Rate {
            per_second: 0.5,
            burst: 2,
        },
        ..test_config()
    };
    let proxy = Proxy::start(config).await;
    let server = FakeServer::register(&proxy, None, &[]).await;
    let http = client();
    // No answer is needed: notifications are accepted at once.
    let note = json!({"jsonrpc": "2.0", "method": "notifications/x"});
    for _ in 0..2 {
        let (s, _) = post(&http, &proxy.url("/message"), note.clone()).await;
        assert_eq!(s, 202);
    }
    let resp = http
        .post(proxy.url("/message"))
        .json(&echo(json!(7), "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], -32000);
    // A made-up token is no caller of its own (auth is off: no token is configured).
    let resp = http
        .post(proxy.url("/message"))
        .bearer_auth("someone-else")
        .json(&note)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    // The server's routes draw from their own budget: it still polls and answers.
    for _ in 0..2 {
        let item = server.next_item(&proxy).await;
        assert_eq!(item["request"]["method"], "notifications/x");
        let (s, _) = server
            .post(
                &proxy,
                json!({"request_id": item["request_id"], "response": null}),
            )
            .await;
        assert_eq!(s, 200);
    }
    proxy.stop().await;
}

#[tokio::test]
async fn random_bearer_tokens_from_one_address_share_its_bucket_and_a_valid_token_has_its_own() {
    const VALID: &str = "client-valid-0123456789";
    let mut tokens = TokenSet::new();
    tokens.add_spec(TokenKind::Client, VALID, "test").unwrap();
    let config = Config {
        client_rate: Rate {
            per_second: 0.01,
            burst: 3,
        },
        auth: Auth::with_tokens(tokens),
        ..test_config()
    };
    let proxy = Proxy::start(config).await;
    let http = client();
    let note = json!({"jsonrpc": "2.0", "method": "notifications/x"});
    let mut statuses = Vec::new();
    for i in 0..6 {
        let resp = http
            .post(proxy.url("/message"))
            .bearer_auth(format!("made-up-token-{i}-{}", uuid::Uuid::new_v4()))
            .json(&note)
            .send()
            .await
            .unwrap();
        if resp.status() == 429 {
            assert!(resp.headers().contains_key("retry-after"));
        }
        statuses.push(resp.status().as_u16());
    }
    // The burst is spent on 401s, then the address is limited whatever token it makes up.
    assert_eq!(statuses, [401, 401, 401, 429, 429, 429]);
    // A configured token is a caller of its own: not limited by its address's bucket.
    let resp = http
        .post(proxy.url("/message"))
        .bearer_auth(VALID)
        .json(&note)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503, "routed (no server), not limited");
    proxy.stop().await;
}

#[tokio::test]
async fn over_the_server_rate_is_429_rate_limited() {
    let config = Config {
        server_rate: Rate {
            per_second: 0.5,
            burst: 1,
        },
        ..test_config()
    };
    let proxy = Proxy::start(config).await;
    let http = client();
    let (s, _) = post(
        &http,
        &proxy.url("/register"),
        json!({"type": "mcp_server"}),
    )
    .await;
    assert_eq!(s, 200);
    let resp = http
        .post(proxy.url("/register"))
        .json(&json!({"type": "mcp_server"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "rate_limited");
    // Clients are not affected by the servers' budget.
    let (s, _) = post(
        &http,
        &proxy.url("/servers/none/message"),
        echo(json!(1), "x"),
    )
    .await;
    assert_eq!(s, 503, "routed, not limited");
    proxy.stop().await;
}

#[tokio::test]
async fn a_full_queue_is_503_and_frees_up_as_answers_come() {
    let config = Config {
        max_pending_per_registration: 2,
        ..test_config()
    };
    let proxy = Proxy::start(config).await;
    let server = FakeServer::register(&proxy, None, &[]).await;
    let http = client();
    let calls: Vec<_> = (0..2)
        .map(|i| {
            let (http, url) = (http.clone(), proxy.url("/message"));
            tokio::spawn(async move { post(&http, &url, echo(json!(i), "q")).await })
        })
        .collect();
    wait_until("two pending", || async {
        proxy.state.broker.stats().pending == 2
    })
    .await;
    let (s, v) = post(&http, &proxy.url("/message"), echo(json!(9), "x")).await;
    assert_eq!((s, &v["id"]), (503, &json!(9)));
    assert_eq!(v["error"]["code"], -32000);
    assert!(v["error"]["message"].as_str().unwrap().contains("busy"));
    let item = server.next_item(&proxy).await;
    server.answer(&proxy, &item, json!({})).await;
    // One answered: there is room again.
    let third = {
        let (http, url) = (http.clone(), proxy.url("/message"));
        tokio::spawn(async move { post(&http, &url, echo(json!(3), "q")).await })
    };
    for _ in 0..2 {
        let item = server.next_item(&proxy).await;
        server.answer(&proxy, &item, json!({})).await;
    }
    for call in calls {
        assert_eq!(call.await.unwrap().0, 200);
    }
    assert_eq!(third.await.unwrap().0, 200);
    proxy.stop().await;
}

#[tokio::test]
async fn polls_over_the_per_registration_limit_get_429() {
    let config = Config {
        max_polls_per_registration: 1,
        ..test_config()
    };
    let proxy = Proxy::start(config).await;
    let server = FakeServer::register(&proxy, None, &[]).await;
    let held = {
        let (http, url) = (
            client(),
            proxy.url(&format!("/poll?session_id={}&timeout=5", server.session)),
        );
        tokio::spawn(async move { http.get(url).send().await.unwrap().status().as_u16() })
    };
    wait_until("the first poll held", || async {
        proxy.state.broker.servers()[0].members[0].polls_open == 1
    })
    .await;
    let resp = client()
        .get(proxy.url(&format!("/poll?session_id={}&timeout=0", server.session)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "rate_limited");
    // The held poll still gets the next item.
    let (s, _) = post(
        &client(),
        &proxy.url("/message"),
        json!({"jsonrpc": "2.0", "method": "notifications/x"}),
    )
    .await;
    assert_eq!(s, 202);
    assert_eq!(held.await.unwrap(), 200);
    proxy.stop().await;
}

#[tokio::test]
async fn an_oversized_answer_from_a_server_is_413_and_its_client_still_gets_an_answer() {
    let proxy = Proxy::start(test_config()).await;
    let server = FakeServer::register(&proxy, None, &[]).await;
    let http = client();
    let call = {
        let (http, url) = (http.clone(), proxy.url("/message"));
        tokio::spawn(async move { post(&http, &url, echo(json!(1), "big")).await })
    };
    let item = server.next_item(&proxy).await;
    let huge = "x".repeat(proxy.state.config().max_body_bytes + 1);
    let body = json!({"request_id": item["request_id"],
        "response": {"jsonrpc": "2.0", "id": 1, "result": {"text": huge}}});
    let (s, v) = post_raw(
        &http,
        &proxy.url(&format!("/response?session_id={}", server.session)),
        body.to_string(),
    )
    .await;
    assert_eq!((s, &v["error"]), (413, &json!("payload_too_large")));
    server.answer(&proxy, &item, json!({"small": true})).await;
    let (s, v) = call.await.unwrap();
    assert_eq!((s, &v["result"]), (200, &json!({"small": true})));
    proxy.stop().await;
}

/// The value of the sample `name` (exact text, labels included) in Prometheus text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

async fn metrics(proxy: &Proxy) -> String {
    let resp = client().get(proxy.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    resp.text().await.unwrap()
}

#[tokio::test]
async fn metrics_move_as_calls_go_through() {
    let proxy = Proxy::start(test_config()).await;
    let before = metrics(&proxy).await;
    assert_eq!(sample(&before, "mcp_proxy_pending_requests"), Some(0.0));
    assert_eq!(sample(&before, "mcp_proxy_polls_held"), Some(0.0));
    let http = client();
    let (s, _) = post(
        &http,
        &proxy.url("/servers/tools/message"),
        echo(json!(1), "x"),
    )
    .await;
    assert_eq!(s, 503);

    let server = ModernServer::spawn(&proxy, Some("tools"), 2).await;
    wait_until("two polls held", || async {
        sample(&metrics(&proxy).await, "mcp_proxy_polls_held") == Some(2.0)
    })
    .await;
    for i in 0..3 {
        let (s, _) = post(
            &http,
            &proxy.url("/servers/tools/message"),
            echo(json!(i), "hello"),
        )
        .await;
        assert_eq!(s, 200);
    }
    let text = metrics(&proxy).await;
    assert_eq!(
        sample(&text, "mcp_proxy_registrations{pool=\"tools\"}"),
        Some(1.0)
    );
    let route = "route=\"/servers/{name}/message\"";
    assert_eq!(
        sample(
            &text,
            &format!("mcp_proxy_request_duration_seconds_count{{{route},status=\"200\"}}")
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            &format!("mcp_proxy_request_duration_seconds_count{{{route},status=\"503\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            &format!(
                "mcp_proxy_request_duration_seconds_bucket{{{route},status=\"200\",le=\"+Inf\"}}"
            )
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, "mcp_proxy_errors_total{kind=\"unavailable\"}"),
        Some(1.0)
    );
    let sent = echo(json!(0), "hello").to_string().len() as f64;
    assert!(sample(&text, &format!("mcp_proxy_bytes_in_total{{{route}}}")).unwrap() >= 3.0 * sent);
    assert!(sample(&text, &format!("mcp_proxy_bytes_out_total{{{route}}}")).unwrap() > 0.0);
    assert!(sample(&text, "mcp_proxy_bytes_out_total{route=\"/poll\"}").unwrap() > 0.0);
    // The path a caller typed never becomes a label.
    assert!(!text.contains("/servers/tools/"));
    server.stop().await;
    proxy.stop().await;
}
