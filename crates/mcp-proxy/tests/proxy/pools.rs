//! Pools: `GET /servers`, load balancing, and failover when a member dies or leaves.

use std::time::Duration;

use mcp_proxy::broker::PoolInfo;
use serde_json::{json, Value};

use super::common::{client, echo, post, register, test_config, wait_until, Proxy};
use super::fake::{initialize, mcp_post, FakeServer};
use super::modern::ModernServer;

/// The pool named `name` (`None`: the default pool) as the broker sees it.
fn pool(proxy: &Proxy, name: Option<&str>) -> Option<PoolInfo> {
    proxy
        .state
        .broker
        .servers()
        .into_iter()
        .find(|p| p.name.as_deref() == name)
}

async fn get_servers(proxy: &Proxy) -> (u16, String) {
    let resp = client().get(proxy.url("/servers")).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn get_servers_shows_pools_and_members_but_no_session_ids() {
    let proxy = Proxy::start(test_config()).await;
    let http = client();
    let (s, body) = get_servers(&proxy).await;
    assert_eq!((s, body.as_str()), (200, r#"{"pools":[]}"#));

    let legacy = register(&http, &proxy, json!({"type": "mcp_server", "timestamp": 1})).await;
    let first = FakeServer::register(&proxy, Some("files"), &["2025-11-25"]).await;
    let second = FakeServer::register(&proxy, Some("files"), &["2025-11-25"]).await;
    let cs = proxy.state.broker.open_session("files").unwrap();
    let call = {
        let (http, url) = (http.clone(), proxy.url("/servers/files/message"));
        tokio::spawn(async move { post(&http, &url, echo(json!(1), "queued")).await })
    };
    wait_until("the call is queued", || async {
        proxy.state.broker.stats().pending == 1
    })
    .await;

    let (s, body) = get_servers(&proxy).await;
    assert_eq!(s, 200);
    for secret in [&legacy, &first.session, &second.session, &cs] {
        assert!(!body.contains(secret.as_str()), "{body} leaks {secret}");
    }
    let v: Value = serde_json::from_str(&body).unwrap();
    let pools = v["pools"].as_array().unwrap();
    assert_eq!(pools.len(), 2);
    let default = &pools[0];
    assert_eq!(default["name"], Value::Null);
    assert_eq!(default["message_path"], "/message");
    assert_eq!(default["mcp_path"], "/mcp");
    assert_eq!(default["members"][0]["kind"], "legacy");
    assert_eq!(default["members"][0]["held_polls"], 0);
    let files = &pools[1];
    assert_eq!(files["name"], "files");
    assert_eq!(files["message_path"], "/servers/files/message");
    assert_eq!(files["mcp_path"], "/servers/files/mcp");
    assert_eq!(files["outstanding"], 1);
    let members = files["members"].as_array().unwrap();
    assert_eq!(members.len(), 2);
    let (m1, m2) = (&members[0], &members[1]);
    assert!(m1["member"].as_u64().unwrap() < m2["member"].as_u64().unwrap());
    let keys: Vec<&String> = m1.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "age_seconds",
            "client_sessions",
            "delivery",
            "held_polls",
            "idle_seconds",
            "in_flight",
            "kind",
            "member",
            "outstanding",
            "polls_open",
            "protocol_versions",
            "queued",
            "sticky",
            "suspect"
        ]
    );
    // Ties go to the earliest member: the session and the sessionless call both went there.
    assert_eq!(m1["kind"], "modern");
    assert_eq!(m1["client_sessions"], 1);
    assert_eq!(m1["sticky"], true);
    assert_eq!((&m1["outstanding"], &m1["queued"]), (&json!(1), &json!(1)));
    assert_eq!(m1["in_flight"], 0);
    assert_eq!(m1["delivery"], "poll");
    assert_eq!(m1["protocol_versions"], json!(["2025-11-25"]));
    assert!(m1["age_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(
        (&m2["sticky"], &m2["outstanding"]),
        (&json!(false), &json!(0))
    );

    let item = first.next_item(&proxy).await;
    first.answer(&proxy, &item, json!({"ok": true})).await;
    assert_eq!(call.await.unwrap().0, 200);
    let files = pool(&proxy, Some("files")).unwrap();
    assert_eq!(files.outstanding, 0);
    proxy.stop().await;
}

#[tokio::test]
async fn new_sessions_go_to_the_member_with_fewest_outstanding_requests() {
    let proxy = Proxy::start(test_config()).await;
    let busy = FakeServer::register(&proxy, Some("p"), &["2025-11-25"]).await;
    let idle = FakeServer::register(&proxy, Some("p"), &["2025-11-25"]).await;
    let http = client();
    // Two sessionless calls queue on the sticky member, the first.
    let calls: Vec<_> = (0..2)
        .map(|i| {
            let (http, url) = (http.clone(), proxy.url("/servers/p/message"));
            tokio::spawn(async move { post(&http, &url, echo(json!(i), "busy")).await })
        })
        .collect();
    wait_until("both calls queued", || async {
        pool(&proxy, Some("p")).unwrap().members[0].outstanding == 2
    })
    .await;
    // A new client session goes to the idle member, and stays there.
    let cs = proxy.state.broker.open_session("p").unwrap();
    let p = pool(&proxy, Some("p")).unwrap();
    assert_eq!(
        (p.members[0].client_sessions, p.members[1].client_sessions),
        (0, 1)
    );
    let pinned = {
        let (http, url, cs) = (http.clone(), proxy.url("/servers/p/message"), cs.clone());
        tokio::spawn(async move {
            let resp = http
                .post(url)
                .header("Mcp-Session-Id", cs)
                .json(&echo(json!(9), "pinned"))
                .send()
                .await
                .unwrap();
            resp.status().as_u16()
        })
    };
    let item = idle.next_item(&proxy).await;
    assert_eq!(item["client_session"], json!(cs));
    idle.answer(&proxy, &item, json!({})).await;
    assert_eq!(pinned.await.unwrap(), 200);
    for _ in 0..2 {
        let item = busy.next_item(&proxy).await;
        busy.answer(&proxy, &item, json!({})).await;
    }
    for call in calls {
        assert_eq!(call.await.unwrap().0, 200);
    }
    proxy.stop().await;
}

#[tokio::test]
async fn sessions_opened_one_after_another_on_an_idle_pool_spread() {
    let proxy = Proxy::start(test_config()).await;
    let _a = FakeServer::register(&proxy, Some("p"), &[]).await;
    let _b = FakeServer::register(&proxy, Some("p"), &[]).await;
    for _ in 0..4 {
        proxy.state.broker.open_session("p").unwrap();
    }
    let p = pool(&proxy, Some("p")).unwrap();
    assert_eq!(
        (p.members[0].client_sessions, p.members[1].client_sessions),
        (2, 2)
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_pool_fails_over_to_the_survivor_without_a_gap() {
    // A long grace: the dead member stays registered (suspect) for the whole test, which
    // shows that new work avoids it before the proxy declares it dead.
    let config = mcp_proxy::Config {
        liveness_grace: Duration::from_secs(60),
        ..test_config()
    };
    let proxy = Proxy::start(config).await;
    let a = ModernServer::spawn(&proxy, Some("p"), 2).await;
    wait_until("a's polls", || async {
        pool(&proxy, Some("p")).unwrap().members[0].polls_open == 2
    })
    .await;
    // A client session on `a`, opened before `b` joins.
    let cs = proxy.state.broker.open_session("p").unwrap();
    let b = ModernServer::spawn(&proxy, Some("p"), 2).await;
    wait_until("b's polls", || async {
        pool(&proxy, Some("p")).unwrap().members[1].polls_open == 2
    })
    .await;
    let http = client();
    let url = proxy.url("/servers/p/message");
    // The sessionless traffic lands on `a` too (ties: the earliest).
    let wait_call = {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move {
            let call = json!({"jsonrpc": "2.0", "id": "w", "method": "tools/call",
                "params": {"name": "wait", "arguments": {}}});
            post(&http, &url, call).await
        })
    };
    wait_until("the wait call in flight on a", || async {
        let p = pool(&proxy, Some("p")).unwrap();
        p.members[0].in_flight == 1 && p.members[0].sticky && p.members[0].client_sessions == 1
    })
    .await;

    // `a` dies: its polls close. Until the grace ends it is only suspect, but sessionless
    // calls already go to `b` and succeed.
    let a_session = a.session.clone();
    a.stop().await;
    wait_until("a suspect", || async {
        pool(&proxy, Some("p")).unwrap().members[0].suspect
    })
    .await;
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move { post(&http, &url, echo(json!(i), &format!("c{i}"))).await })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        let (s, v) = call.await.unwrap();
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["result"]["content"][0]["text"], format!("c{i}"));
    }
    let p = pool(&proxy, Some("p")).unwrap();
    assert_eq!(p.members.len(), 2, "a is not declared dead yet");
    assert!(p.members[1].sticky && !p.members[0].sticky);

    // `a` is removed (here: it leaves; death past the grace does the same): its pending call
    // fails at once and its pinned session gets 404.
    let resp = http
        .delete(proxy.url(&format!("/register?session_id={a_session}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let (s, v) = tokio::time::timeout(Duration::from_secs(2), wait_call)
        .await
        .expect("the pending call fails at once")
        .unwrap();
    assert_eq!(
        (s, &v["error"]["code"], &v["id"]),
        (502, &json!(-32012), &json!("w"))
    );
    let resp = http
        .post(&url)
        .header("Mcp-Session-Id", &cs)
        .json(&echo(json!(1), "pinned"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    // The client initializes again and lands on the survivor.
    let resp = mcp_post(
        &http,
        &proxy.url("/servers/p/mcp"),
        "application/json",
        None,
        &initialize(2),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let new_cs = resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let resp = mcp_post(
        &http,
        &proxy.url("/servers/p/mcp"),
        "application/json",
        Some(&new_cs),
        &echo(json!(3), "again"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["result"]["content"][0]["text"], "again");
    let p = pool(&proxy, Some("p")).unwrap();
    assert_eq!(p.members.len(), 1);
    assert_eq!(p.members[0].client_sessions, 1);
    b.stop().await;
    proxy.stop().await;
}

#[tokio::test]
async fn a_leaving_member_fails_its_queued_work_and_the_next_call_reaches_the_other() {
    let proxy = Proxy::start(test_config()).await;
    let first = FakeServer::register(&proxy, None, &[]).await;
    let second = FakeServer::register(&proxy, None, &[]).await;
    let http = client();
    let call = {
        let (http, url) = (http.clone(), proxy.url("/message"));
        tokio::spawn(async move { post(&http, &url, echo(json!(1), "x")).await })
    };
    wait_until("queued on the first", || async {
        pool(&proxy, None).unwrap().members[0].queued == 1
    })
    .await;
    first.leave().await;
    let (s, v) = call.await.unwrap();
    assert_eq!((s, &v["error"]["code"]), (502, &json!(-32012)));
    let call = {
        let (http, url) = (http.clone(), proxy.url("/message"));
        tokio::spawn(async move { post(&http, &url, echo(json!(2), "y")).await })
    };
    let item = second.next_item(&proxy).await;
    second.answer(&proxy, &item, json!({"ok": 2})).await;
    let (s, v) = call.await.unwrap();
    assert_eq!((s, &v["result"]), (200, &json!({"ok": 2})));
    proxy.stop().await;
}
