//! The operator's console over HTTP: off by default, the login (cookie, bounded failures,
//! same-origin posts), the security headers, the view (a member, a call, a member gone
//! down) and its bounded SSE stream. The browser's view of it is `cargo xtask console`.

use mcp_proxy::console::{ConsoleConfig, LOGIN_FAILURES_PER_ADDRESS, MAX_STREAMS};
use mcp_proxy::Config;
use reqwest::header::{CONTENT_SECURITY_POLICY, COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use serde_json::{json, Value};

use super::common::{echo, post, test_config, wait_until, Proxy};
use super::modern::ModernServer;

const PASSWORD: &str = "console-password-0123";

fn console_config() -> Config {
    Config {
        console: Some(ConsoleConfig::new("admin", PASSWORD).unwrap()),
        ..test_config()
    }
}

/// A client that does not follow redirects (the tests read them).
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// Logs in; returns the `name=value` cookie.
async fn login(proxy: &Proxy) -> String {
    let resp = http()
        .post(proxy.url("/console/login"))
        .form(&[("user", "admin"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()[LOCATION], "/console");
    let cookie = resp.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    cookie.split(';').next().unwrap().to_owned()
}

async fn view(proxy: &Proxy, cookie: &str) -> Value {
    let resp = http()
        .get(proxy.url("/console/api/state"))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn the_console_is_off_unless_enabled() {
    let proxy = Proxy::start(test_config()).await;
    for path in ["/console", "/console/login", "/console/api/state"] {
        let status = http().get(proxy.url(path)).send().await.unwrap().status();
        assert_eq!(status, 404, "{path}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn login_gives_a_cookie_session_and_logout_ends_it() {
    let proxy = Proxy::start(console_config()).await;
    let resp = http().get(proxy.url("/console")).send().await.unwrap();
    assert_eq!(resp.status(), 303, "no session: to the login form");
    assert_eq!(resp.headers()[LOCATION], "/console/login");
    let resp = http()
        .get(proxy.url("/console/login"))
        .send()
        .await
        .unwrap();
    let csp = resp.headers()[CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    let page = resp.text().await.unwrap();
    assert!(page.contains(r#"<label for="password">"#) && !page.contains("<script"));

    let wrong = http()
        .post(proxy.url("/console/login"))
        .form(&[("user", "admin"), ("password", "not-the-password")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get(SET_COOKIE).is_none());
    let foreign = http()
        .post(proxy.url("/console/login"))
        .header("origin", "https://evil.example")
        .form(&[("user", "admin"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403, "a cross-site login post is refused");
    // A page on a DNS-rebinding name reaches the same address with its own Host and Origin.
    let rebinding = format!("127.evil.example:{}", proxy.addr.port());
    let rebound = http()
        .post(proxy.url("/console/login"))
        .header("host", &rebinding)
        .header("origin", format!("http://{rebinding}"))
        .form(&[("user", "admin"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403, "a rebinding name is refused");

    let cookie = login(&proxy).await;
    let resp = http()
        .get(proxy.url("/console"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("/console/assets/console.js"));
    let forged = format!("mcp_console={}", "0".repeat(64));
    for c in [None, Some(forged.as_str())] {
        let mut req = http().get(proxy.url("/console/api/state"));
        if let Some(c) = c {
            req = req.header(COOKIE, c);
        }
        assert_eq!(req.send().await.unwrap().status(), 401);
    }
    let js = http()
        .get(proxy.url("/console/assets/console.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        js.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );

    let out = http()
        .post(proxy.url("/console/logout"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    let after = http()
        .get(proxy.url("/console/api/state"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401, "the session ended");
    proxy.stop().await;
}

#[tokio::test]
async fn failed_logins_are_bounded() {
    let proxy = Proxy::start(console_config()).await;
    for _ in 0..LOGIN_FAILURES_PER_ADDRESS {
        let resp = http()
            .post(proxy.url("/console/login"))
            .form(&[("user", "admin"), ("password", "guess-guess-guess")])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
    }
    let resp = http()
        .post(proxy.url("/console/login"))
        .form(&[("user", "admin"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        429,
        "even the right password waits out the window"
    );
    assert!(resp.headers().get("retry-after").is_some());
    proxy.stop().await;
}

#[tokio::test]
async fn the_view_shows_members_calls_and_members_gone_down() {
    let proxy = Proxy::start(console_config()).await;
    let cookie = login(&proxy).await;
    let server = ModernServer::spawn(&proxy, Some("alpha"), 2).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let (status, _) = post(
        &client,
        &proxy.url("/servers/alpha/message"),
        echo(json!(1), "hi"),
    )
    .await;
    assert_eq!(status, 200);

    wait_until("the call in the view", || async {
        let v = view(&proxy, &cookie).await;
        v["audit"]["lines"][0]["name"] == "echo"
    })
    .await;
    let v = view(&proxy, &cookie).await;
    let pool = &v["pools"][0];
    assert_eq!(pool["name"], "alpha");
    let member = &pool["members"][0];
    assert_eq!(member["status"], "up");
    assert_eq!(member["delivery"], "poll");
    assert_eq!(member["protocol_versions"], json!(["2025-11-25"]));
    assert!(member["connected_since"].as_str().unwrap().ends_with('Z'));
    let calls: f64 = member["chart"]["calls_per_second"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .sum();
    assert!(calls > 0.0, "the call is on the member's chart: {member}");
    // Filters: the call is found by tool and request id, not by another pool.
    let line = &v["audit"]["lines"][0];
    let rid = line["request_id"].as_str().unwrap();
    for (query, found) in [
        (format!("tool=ech&request_id={}", &rid[2..10]), true),
        ("pool=beta".to_owned(), false),
        ("status=failed".to_owned(), false),
        ("status=ok&pool=alpha".to_owned(), true),
    ] {
        let resp = http()
            .get(proxy.url(&format!("/console/api/state?{query}")))
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        let v: Value = resp.json().await.unwrap();
        let n = v["audit"]["lines"].as_array().unwrap().len();
        assert_eq!(n > 0, found, "{query}");
    }

    server.stop().await; // its polls close, as when the process dies
    wait_until("the member marked down", || async {
        let v = view(&proxy, &cookie).await;
        v["pools"][0]["members"][0]["status"] == "down"
    })
    .await;
    proxy.stop().await;
}

#[tokio::test]
async fn live_updates_come_over_a_bounded_sse_stream() {
    let proxy = Proxy::start(console_config()).await;
    let cookie = login(&proxy).await;
    let open = || {
        http()
            .get(proxy.url("/console/events"))
            .header(COOKIE, &cookie)
            .send()
    };
    let mut first = open().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["content-type"], "text/event-stream");
    let chunk = first.chunk().await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&chunk);
    assert!(text.starts_with("event: state\ndata: {"), "{text}");
    let mut streams = vec![first];
    for _ in 1..MAX_STREAMS {
        let resp = open().await.unwrap();
        assert_eq!(resp.status(), 200);
        streams.push(resp);
    }
    assert_eq!(open().await.unwrap().status(), 503, "one stream too many");
    streams.pop();
    wait_until("a place freed", || async {
        open().await.unwrap().status() == 200
    })
    .await;
    proxy.stop().await;
}
