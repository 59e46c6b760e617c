//! Routing: ids restored under collisions, concurrency, pools.

use futures::future::join_all;
use serde_json::{json, Value};

use super::common::{client, echo, poll, post, register, respond, test_config, wait_until, Proxy};
use super::modern::ModernServer;

#[tokio::test]
async fn each_client_gets_its_own_answer_with_its_own_id_when_ids_collide() {
    let proxy = Proxy::start(test_config()).await;
    let http = client();
    let session = register(&http, &proxy, json!({"type": "mcp_server"})).await;
    // Four clients, colliding ids (1, 1, "1", 1.0 is not used: kept exactly is tested in unit tests).
    let ids = [json!(1), json!(1), json!("1"), json!(1)];
    let url = proxy.url("/message");
    let clients: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let (http, url, body) = (
                http.clone(),
                url.clone(),
                echo(id.clone(), &format!("client-{i}")),
            );
            tokio::spawn(async move { post(&http, &url, body).await })
        })
        .collect();
    // Take all four items, then answer in reverse order, each with the id the server saw.
    let mut items = Vec::new();
    while items.len() < 4 {
        let (s, item) = poll(&http, &proxy, &session, 2).await;
        if s == 200 {
            items.push(item);
        }
    }
    let mut request_ids: Vec<&str> = items
        .iter()
        .map(|i| i["request_id"].as_str().unwrap())
        .collect();
    request_ids.sort();
    request_ids.dedup();
    assert_eq!(
        request_ids.len(),
        4,
        "the proxy's request ids are its own and distinct"
    );
    for item in items.iter().rev() {
        let req = &item["request"];
        let answer = json!({"jsonrpc": "2.0", "id": req["id"],
            "result": {"content": [{"type": "text", "text": req["params"]["arguments"]["text"]}]}});
        let (s, v) = respond(
            &http,
            &proxy,
            &session,
            json!({"request_id": item["request_id"], "response": answer}),
        )
        .await;
        assert_eq!((s, v), (200, json!({"status": "ok"})));
    }
    for (i, c) in clients.into_iter().enumerate() {
        let (s, v) = c.await.unwrap();
        assert_eq!(s, 200);
        assert_eq!(v["id"], ids[i], "id restored exactly");
        assert_eq!(v["result"]["content"][0]["text"], format!("client-{i}"));
    }
    proxy.stop().await;
}

#[tokio::test]
async fn a_hundred_concurrent_clients_each_get_their_answer() {
    let proxy = Proxy::start(test_config()).await;
    let server = ModernServer::spawn(&proxy, None, 8).await;
    let http = client();
    let url = proxy.url("/message");
    let calls = (0..100).map(|i| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let (s, v) = post(&http, &url, echo(json!(i % 3), &format!("msg-{i}"))).await;
            assert_eq!(s, 200, "{v}");
            assert_eq!(v["id"], i % 3);
            assert_eq!(v["result"]["content"][0]["text"], format!("msg-{i}"));
        }
    });
    join_all(calls).await;
    assert_eq!(proxy.state.broker.stats().pending, 0);
    server.stop().await;
    proxy.stop().await;
}

#[tokio::test]
async fn a_slow_request_does_not_block_a_fast_one() {
    let proxy = Proxy::start(test_config()).await;
    let server = ModernServer::spawn(&proxy, None, 2).await;
    let http = client();
    let url = proxy.url("/message");
    let slow = {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move {
            post(
                &http,
                &url,
                json!({"jsonrpc": "2.0", "id": "slow", "method": "tools/call",
                "params": {"name": "wait"}}),
            )
            .await
        })
    };
    let (s, v) = post(&http, &url, echo(json!("fast"), "quick")).await;
    assert_eq!(
        (s, &v["result"]["content"][0]["text"]),
        (200, &json!("quick"))
    );
    assert!(!slow.is_finished(), "the slow call is still running");
    server.release.notify_one();
    let (s, v) = slow.await.unwrap();
    assert_eq!((s, &v["id"]), (200, &json!("slow")));
    server.stop().await;
    proxy.stop().await;
}

#[tokio::test]
async fn named_pools_are_addressed_by_path() {
    let proxy = Proxy::start(test_config()).await;
    let http = client();
    let (s, v) = post(&http, &proxy.url("/message"), echo(json!(1), "x")).await;
    assert_eq!(s, 503);
    assert_eq!(
        v["error"],
        json!({"code": -32010, "message": "no MCP server registered"})
    );
    assert_eq!(v["id"], 1);

    let files = ModernServer::spawn(&proxy, Some("files"), 1).await;
    let (s, v) = post(
        &http,
        &proxy.url("/servers/files/message"),
        echo(json!(2), "to files"),
    )
    .await;
    assert_eq!(
        (s, &v["result"]["content"][0]["text"]),
        (200, &json!("to files"))
    );
    // The named pool is not the default pool.
    let (s, _) = post(&http, &proxy.url("/message"), echo(json!(3), "x")).await;
    assert_eq!(s, 503);
    let (s, v) = post(
        &http,
        &proxy.url("/servers/mail/message"),
        echo(json!(4), "x"),
    )
    .await;
    assert_eq!(s, 503);
    assert_eq!(v["error"]["message"], "no MCP server named 'mail'");
    assert_eq!(v["error"]["data"], json!({"pool": "mail"}));
    let (s, v) = post(
        &http,
        &proxy.url("/servers/bad%20name/message"),
        echo(json!(5), "x"),
    )
    .await;
    assert_eq!((s, &v["error"]["code"]), (400, &json!(-32600)));
    files.stop().await;
    proxy.stop().await;
}

#[tokio::test]
async fn pinned_sessions_follow_their_registration_and_404_when_it_dies() {
    let proxy = Proxy::start(test_config()).await;
    let server = ModernServer::spawn(&proxy, None, 1).await;
    let http = client();
    let cs = proxy.state.broker.open_session("").unwrap();
    let send = |id: i64| {
        http.post(proxy.url("/message"))
            .header("Mcp-Session-Id", cs.clone())
            .json(&echo(json!(id), "pinned"))
            .send()
    };
    let resp = send(1).await.unwrap();
    assert_eq!(resp.status(), 200);
    // An unknown session id is 404 too.
    let resp = http
        .post(proxy.url("/message"))
        .header("Mcp-Session-Id", "c-nope")
        .json(&echo(json!(2), "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], -32001);

    // The server dies (its polls close); past the grace its session's next request gets 404.
    server.stop().await;
    wait_until("the registration's death", || async {
        proxy.state.broker.stats().registrations == 0
    })
    .await;
    let resp = send(3).await.unwrap();
    assert_eq!(resp.status(), 404);
    proxy.stop().await;
}

#[tokio::test]
async fn modern_items_carry_client_session_and_forwarded_headers_legacy_items_do_not() {
    let proxy = Proxy::start(test_config()).await;
    let http = client();
    let modern = register(
        &http,
        &proxy,
        json!({"type": "mcp_server", "name": "m",
        "capabilities": {"client_sessions": true}}),
    )
    .await;
    let cs = proxy.state.broker.open_session("m").unwrap();
    let call = {
        let (http, url, cs) = (http.clone(), proxy.url("/servers/m/message"), cs.clone());
        tokio::spawn(async move {
            http.post(url)
                .header("Mcp-Session-Id", cs)
                .header("MCP-Protocol-Version", "2025-11-25")
                .json(&echo(json!(1), "h"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    let (s, item) = poll(&http, &proxy, &modern, 5).await;
    assert_eq!(s, 200);
    assert_eq!(item["client_session"], json!(cs));
    assert_eq!(
        item["headers"],
        json!({"mcp-protocol-version": "2025-11-25"})
    );
    let answer = json!({"jsonrpc": "2.0", "id": 1, "result": {}});
    respond(
        &http,
        &proxy,
        &modern,
        json!({"request_id": item["request_id"], "response": answer}),
    )
    .await;
    assert_eq!(call.await.unwrap(), 200);

    let legacy = register(&http, &proxy, json!({"type": "mcp_server", "timestamp": 1})).await;
    let call = {
        let (http, url) = (http.clone(), proxy.url("/message"));
        tokio::spawn(async move {
            http.post(url)
                .header("MCP-Protocol-Version", "2025-11-25")
                .json(&echo(json!(1), "h"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    let (s, item) = poll(&http, &proxy, &legacy, 5).await;
    assert_eq!(s, 200);
    let keys: Vec<&String> = item.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["request", "request_id"], "the seed's shape only");
    respond(
        &http,
        &proxy,
        &legacy,
        json!({"request_id": item["request_id"], "response": answer}),
    )
    .await;
    assert_eq!(call.await.unwrap(), 200);
    proxy.stop().await;
}
