//! The reverse channel (`GET /channel`), driven by hand with a real WebSocket client: who may
//! open one, items against credit, answers and acks, replacement, a broken channel's
//! requests answered by `POST /response`, and bad frames.

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::ClientRequestBuilder;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::common::{
    client, echo, health, leave, post, register, respond, test_config, wait_until, Proxy, PATIENCE,
};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn modern() -> Value {
    json!({"type": "mcp_server", "capabilities": {"held_polls": 1}})
}

/// Opens the channel of `session` with `headers`; the socket, or the refusal's status and body.
async fn open_with(
    proxy: &Proxy,
    session: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<Ws, (u16, Value)> {
    let uri = format!("ws://{}/channel", proxy.addr).parse().unwrap();
    let mut request = ClientRequestBuilder::new(uri);
    if let Some(session) = session {
        request = request.with_header("Mcp-Reverse-Session-Id", session);
    }
    for (name, value) in headers {
        request = request.with_header(*name, *value);
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(resp)) => {
            let body = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Err((resp.status().as_u16(), body))
        }
        Err(e) => panic!("channel: {e}"),
    }
}

/// Opens the channel of `session` and reads its hello.
async fn open(proxy: &Proxy, session: &str) -> Ws {
    let mut ws = open_with(proxy, Some(session), &[])
        .await
        .expect("channel opens");
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["kind"], "hello", "{hello}");
    assert_eq!(hello["max_frame_bytes"], 64 * 1024);
    ws
}

/// The next text frame as JSON (pings skipped).
async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("a frame in time")
            .expect("the channel is open")
            .expect("a readable frame");
        match frame {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// The close frame's code, once the proxy closes the channel.
async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        match tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Message::Close(frame))) => return frame.map_or(1005, |f| f.code.into()),
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    }
}

async fn send(ws: &mut Ws, frame: Value) {
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
}

/// The `mcp_proxy_channels_open` gauge.
async fn channels_open(http: &reqwest::Client, proxy: &Proxy) -> String {
    let text = http
        .get(proxy.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("mcp_proxy_channels_open "));
    line.expect("the gauge is shown")
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned()
}

/// Items queued for the proxy's one registration.
fn queued(proxy: &Proxy) -> usize {
    proxy.state.broker.servers()[0].members[0].queued
}

/// The echo answer to request item `item`, as an up frame.
fn answer(item: &Value) -> Value {
    let request = &item["request"];
    json!({"request_id": item["request_id"], "response": {"jsonrpc": "2.0", "id": request["id"],
        "result": {"content": [{"type": "text", "text": request["params"]["arguments"]["text"]}]}}})
}

#[tokio::test]
async fn upgrades_that_cannot_be_served_are_refused_with_their_reason() {
    let proxy = Proxy::start(test_config()).await;
    let http = client();
    let (status, body) = open_with(&proxy, None, &[]).await.unwrap_err();
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_query"))
    );
    let unknown = "m-00000000000000000000000000000000";
    let (status, body) = open_with(&proxy, Some(unknown), &[]).await.unwrap_err();
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("unknown_session"))
    );
    let legacy = register(&http, &proxy, json!({"type": "mcp_server"})).await;
    let (status, body) = open_with(&proxy, Some(&legacy), &[]).await.unwrap_err();
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_body"))
    );
    // A web page cannot drive a channel: browsers send Origin, and apply no CORS here.
    let session = register(&http, &proxy, modern()).await;
    let page = [("Origin", "https://evil.example")];
    let (status, body) = open_with(&proxy, Some(&session), &page).await.unwrap_err();
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    // A plain GET is not an upgrade.
    let resp = http
        .get(proxy.url("/channel"))
        .header("Mcp-Reverse-Session-Id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn a_proxy_with_channels_off_has_no_channel_route() {
    let mut config = test_config();
    config.channels = false;
    let proxy = Proxy::start(config).await;
    let session = register(&client(), &proxy, modern()).await;
    let (status, _) = open_with(&proxy, Some(&session), &[]).await.unwrap_err();
    assert_eq!(status, 404);
}

#[tokio::test]
async fn items_come_against_credit_and_answers_go_up_with_acks() {
    let proxy = Proxy::start(test_config()).await;
    let http = client();
    let session = register(&http, &proxy, modern()).await;
    let mut ws = open(&proxy, &session).await;
    let servers = proxy.state.broker.servers();
    assert_eq!(
        (
            servers[0].members[0].delivery,
            servers[0].members[0].polls_open
        ),
        ("channel", 1)
    );
    let calls: Vec<_> = (0..3)
        .map(|i| {
            let (http, url) = (http.clone(), proxy.url("/message"));
            tokio::spawn(async move { post(&http, &url, echo(json!(i), &format!("t{i}"))).await })
        })
        .collect();
    wait_until("the calls are queued", || async {
        health(&http, &proxy).await["pending"] == 3
    })
    .await;
    // No credit, no item: the calls wait in the broker.
    assert_eq!(queued(&proxy), 3);
    send(&mut ws, json!({"kind": "credit", "items": 2})).await;
    let first = next_json(&mut ws).await;
    let second = next_json(&mut ws).await;
    wait_until("two handed over", || async { queued(&proxy) == 1 }).await;
    send(&mut ws, answer(&first)).await;
    send(&mut ws, answer(&second)).await;
    send(&mut ws, json!({"kind": "credit", "items": 1})).await;
    let third = next_json(&mut ws).await;
    send(&mut ws, answer(&third)).await;
    let mut texts = Vec::new();
    for call in calls {
        let (status, v) = call.await.unwrap();
        assert_eq!(status, 200, "{v}");
        texts.push(
            v["result"]["content"][0]["text"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    texts.sort();
    assert_eq!(texts, ["t0", "t1", "t2"]);
    // Fewer than 32 answers: acked within a second.
    let ack = next_json(&mut ws).await;
    assert_eq!(ack, json!({"kind": "ack", "answers": 3}));
}

#[tokio::test]
async fn bad_frames_are_explained_and_the_channel_stays_open() {
    let proxy = Proxy::start(test_config()).await;
    let http = client();
    let session = register(&http, &proxy, modern()).await;
    let mut ws = open(&proxy, &session).await;
    for bad in [
        json!({"kind": "credit", "items": 0}),
        json!({"kind": "launch"}),
        json!([1]),
    ] {
        send(&mut ws, bad).await;
        let error = next_json(&mut ws).await;
        assert_eq!(
            (error["kind"].as_str(), error["error"].as_str()),
            (Some("error"), Some("invalid_body")),
            "{error}"
        );
    }
    ws.send(Message::Text("not json".into())).await.unwrap();
    assert_eq!(next_json(&mut ws).await["error"], "invalid_body");
    // Still serving: a call goes through.
    send(&mut ws, json!({"kind": "credit", "items": 1})).await;
    let call = tokio::spawn({
        let (http, url) = (http.clone(), proxy.url("/message"));
        async move { post(&http, &url, echo(json!(1), "still")).await }
    });
    let item = next_json(&mut ws).await;
    send(&mut ws, answer(&item)).await;
    assert_eq!(call.await.unwrap().0, 200);
    // A binary frame ends the channel (1003).
    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, 1003);
}

#[tokio::test]
async fn a_newer_channel_replaces_the_older_and_leaving_closes_it() {
    let proxy = Proxy::start(test_config()).await;
    let http = client();
    let session = register(&http, &proxy, modern()).await;
    let mut old = open(&proxy, &session).await;
    let mut new = open(&proxy, &session).await;
    assert_eq!(close_code(&mut old).await, 4000);
    assert_eq!(channels_open(&http, &proxy).await, "1");
    leave(&http, &proxy, &session).await;
    assert_eq!(close_code(&mut new).await, 4004);
    assert_eq!(channels_open(&http, &proxy).await, "0");
}

#[tokio::test]
async fn a_broken_channel_is_a_dropped_poll_and_its_requests_are_answered_by_post() {
    let proxy = Proxy::start(test_config()).await;
    let http = client();
    let session = register(&http, &proxy, modern()).await;
    let mut ws = open(&proxy, &session).await;
    send(&mut ws, json!({"kind": "credit", "items": 1})).await;
    let call = tokio::spawn({
        let (http, url) = (http.clone(), proxy.url("/message"));
        async move { post(&http, &url, echo(json!(7), "after the break")).await }
    });
    let item = next_json(&mut ws).await;
    // The connection breaks without a close frame.
    drop(ws);
    wait_until("the registration is suspect", || async {
        let servers: Value = http
            .get(proxy.url("/servers"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        servers["pools"][0]["members"][0]["suspect"] == true
    })
    .await;
    // The handed-over request still waits for its answer, which may come by POST.
    let (status, v) = respond(&http, &proxy, &session, answer(&item)).await;
    assert_eq!((status, v["status"].as_str()), (200, Some("ok")), "{v}");
    let (status, v) = call.await.unwrap();
    assert_eq!(
        (status, v["result"]["content"][0]["text"].as_str()),
        (200, Some("after the break"))
    );
    // No new channel or poll within the grace: dead, as a server whose polls all dropped.
    wait_until("the registration is removed", || async {
        health(&http, &proxy).await["registrations"] == 0
    })
    .await;
}

#[tokio::test]
async fn with_server_auth_on_a_channel_needs_the_registrations_own_token() {
    use mcp_proxy::auth::{Auth, TokenKind, TokenSet};
    const OWNER: &str = "server-owner-0123456789";
    const OTHER: &str = "server-other-0123456789";
    let mut tokens = TokenSet::new();
    for token in [OWNER, OTHER] {
        tokens.add_spec(TokenKind::Server, token, "test").unwrap();
    }
    let config = mcp_proxy::Config {
        auth: Auth::with_tokens(tokens),
        ..test_config()
    };
    let proxy = Proxy::start(config).await;
    let resp = client()
        .post(proxy.url("/register"))
        .bearer_auth(OWNER)
        .json(&modern())
        .send()
        .await
        .unwrap();
    let session = resp.json::<Value>().await.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for token in [None, Some(OTHER), Some("not-a-token-at-all-000")] {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer
            .iter()
            .map(|b| ("Authorization", b.as_str()))
            .collect();
        let (status, body) = open_with(&proxy, Some(&session), &headers)
            .await
            .unwrap_err();
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("unauthorized")),
            "{token:?}"
        );
        // Nothing about the registration leaks in the refusal.
        assert!(!body.to_string().contains(&session));
    }
    let owner = format!("Bearer {OWNER}");
    let mut ws = open_with(&proxy, Some(&session), &[("Authorization", &owner)])
        .await
        .expect("the owner's token opens it");
    assert_eq!(next_json(&mut ws).await["kind"], "hello");
}

#[tokio::test]
async fn answers_nobody_waits_for_change_nothing_and_an_oversized_frame_ends_only_its_channel() {
    let proxy = Proxy::start(test_config()).await;
    let http = client();
    let session = register(&http, &proxy, modern()).await;
    let mut ws = open(&proxy, &session).await;
    // An answer for an unknown request, then the same again: dropped, the channel open.
    let stray = json!({"request_id": "r-00000000000000000000000000000000",
        "response": {"jsonrpc": "2.0", "id": 1, "result": {}}});
    send(&mut ws, stray.clone()).await;
    send(&mut ws, stray).await;
    send(&mut ws, json!({"kind": "credit", "items": 2})).await;
    let call = tokio::spawn({
        let (http, url) = (http.clone(), proxy.url("/message"));
        async move { post(&http, &url, echo(json!(1), "first")).await }
    });
    let item = next_json(&mut ws).await;
    send(&mut ws, answer(&item)).await;
    // A repeat of an answer that landed is a duplicate: the caller got the first one.
    send(&mut ws, answer(&item)).await;
    let (status, v) = call.await.unwrap();
    assert_eq!(
        (status, v["result"]["content"][0]["text"].as_str()),
        (200, Some("first"))
    );
    assert_eq!(
        next_json(&mut ws).await,
        json!({"kind": "ack", "answers": 4})
    );

    // A frame over --max-body-bytes plus the envelope room ends this channel only.
    let other = register(&http, &proxy, modern()).await;
    let mut bystander = open(&proxy, &other).await;
    let huge = "x".repeat(64 * 1024 + mcp_protocol::channel::FRAME_SLACK_BYTES + 1);
    let _ = ws.send(Message::Text(huge.into())).await;
    let ended = tokio::time::timeout(PATIENCE, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the oversized frame's channel ended");
    send(&mut bystander, json!({"kind": "credit", "items": 1})).await;
    let call = tokio::spawn({
        let (http, url) = (http.clone(), proxy.url("/message"));
        async move { post(&http, &url, echo(json!(2), "bystander")).await }
    });
    let item = next_json(&mut bystander).await;
    send(&mut bystander, answer(&item)).await;
    assert_eq!(call.await.unwrap().0, 200);
}

#[tokio::test]
async fn an_idle_channel_outlives_the_idle_and_header_timeouts() {
    let config = mcp_proxy::Config {
        header_timeout: std::time::Duration::from_millis(200),
        idle_timeout: std::time::Duration::from_millis(200),
        ..test_config()
    };
    let proxy = Proxy::start(config).await;
    let http = client();
    let session = register(&http, &proxy, modern()).await;
    let mut ws = open(&proxy, &session).await;
    // The time passing is what is tested: several idle timeouts without a frame.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    send(&mut ws, json!({"kind": "credit", "items": 1})).await;
    let call = tokio::spawn({
        let (http, url) = (http.clone(), proxy.url("/message"));
        async move { post(&http, &url, echo(json!(3), "still open")).await }
    });
    let item = next_json(&mut ws).await;
    send(&mut ws, answer(&item)).await;
    assert_eq!(call.await.unwrap().0, 200);
}
