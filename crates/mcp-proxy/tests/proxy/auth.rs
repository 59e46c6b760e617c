//! Authentication: 401 on every route without a valid token, tokens bound to names, a
//! registration bound to the token it registered with, forged answers refused, token file
//! reload.

use mcp_proxy::auth::{Auth, TokenKind, TokenSet};
use mcp_proxy::Config;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use serde_json::{json, Value};

use super::common::{echo, poll, post, register, respond, test_config, wait_until, Proxy};

const SERVER_ALPHA: &str = "server-alpha-0123456789";
const SERVER_BETA: &str = "server-beta-01234567890";
const SERVER_ANY: &str = "server-any-012345678901";
const SERVER_DEFAULT: &str = "server-default-01234567";
const CLIENT_ALPHA: &str = "client-alpha-0123456789";
const CLIENT_ANY: &str = "client-any-012345678901";
const CLIENT_DEFAULT: &str = "client-default-01234567";

/// A proxy with server and client tokens bound to names.
fn auth_config() -> Config {
    let mut tokens = TokenSet::new();
    for (kind, spec) in [
        (TokenKind::Server, format!("{SERVER_ALPHA}:alpha")),
        (TokenKind::Server, format!("{SERVER_BETA}:beta")),
        (TokenKind::Server, format!("{SERVER_ANY}:*")),
        (TokenKind::Server, SERVER_DEFAULT.to_owned()),
        (TokenKind::Client, format!("{CLIENT_ALPHA}:alpha")),
        (TokenKind::Client, format!("{CLIENT_ANY}:*")),
        (TokenKind::Client, format!("{CLIENT_DEFAULT}:@default")),
    ] {
        tokens.add_spec(kind, &spec, "test").unwrap();
    }
    Config {
        auth: Auth::with_tokens(tokens),
        ..test_config()
    }
}

/// An HTTP client that sends `token` (or nothing) on every request.
fn client_with(token: Option<&str>) -> reqwest::Client {
    let mut headers = HeaderMap::new();
    if let Some(t) = token {
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
        );
    }
    reqwest::Client::builder()
        .no_proxy()
        .default_headers(headers)
        .build()
        .unwrap()
}

fn modern(name: Option<&str>) -> Value {
    let mut body = json!({"type": "mcp_server", "capabilities": {
        "client_sessions": true, "server_messages": true, "held_polls": 0,
        "protocol_versions": ["2025-11-25"]}});
    if let Some(n) = name {
        body["name"] = json!(n);
    }
    body
}

/// Sends `method path` with `body` and checks the 401 and its face.
async fn assert_401(http: &reqwest::Client, proxy: &Proxy, method: &str, path: &str, rpc: bool) {
    let url = proxy.url(path);
    let req = match method {
        "GET" => http.get(&url).header("accept", "text/event-stream"),
        "DELETE" => http.delete(&url),
        _ => http
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(echo(json!(1), "x").to_string()),
    };
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 401, "{method} {path}");
    assert_eq!(
        resp.headers()[WWW_AUTHENTICATE],
        "Bearer realm=\"mcp-proxy\"",
        "{method} {path}"
    );
    assert_eq!(resp.headers()["connection"], "close", "{method} {path}");
    let body: Value = resp.json().await.unwrap();
    if rpc {
        assert_eq!(body["jsonrpc"], "2.0", "{method} {path}: {body}");
        assert_eq!(body["id"], Value::Null);
        assert_eq!(body["error"]["code"], -32000, "{body}");
    } else {
        assert_eq!(body["error"], "unauthorized", "{method} {path}: {body}");
    }
    // Nothing about sessions, pools or tokens in the refusal.
    let text = body.to_string();
    for secret in ["m-", "alpha", SERVER_ALPHA, CLIENT_ALPHA] {
        assert!(!text.contains(secret), "{text}");
    }
}

#[tokio::test]
async fn missing_or_wrong_token_is_401_on_every_route() {
    let proxy = Proxy::start(auth_config()).await;
    // A real registration, so the session id in the queries is a live one.
    let owner = client_with(Some(SERVER_ALPHA));
    let session = register(&owner, &proxy, modern(Some("alpha"))).await;
    let server_routes = [
        ("POST", "/register".to_owned()),
        ("GET", format!("/poll?session_id={session}&timeout=0")),
        ("POST", format!("/response?session_id={session}")),
        ("DELETE", format!("/register?session_id={session}")),
    ];
    let client_routes = [
        ("POST", "/message"),
        ("POST", "/servers/alpha/message"),
        ("POST", "/mcp"),
        ("GET", "/mcp"),
        ("DELETE", "/mcp"),
        ("POST", "/servers/alpha/mcp"),
        ("GET", "/servers/alpha/mcp"),
        ("DELETE", "/servers/alpha/mcp"),
    ];
    let nobody = client_with(None);
    let stranger = client_with(Some("not-a-configured-token-at-all"));
    let basic = {
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Basic c2VydmVyLWFscGhh"),
        );
        reqwest::Client::builder()
            .no_proxy()
            .default_headers(h)
            .build()
            .unwrap()
    };
    // A client token does not open server routes, and a server token not client routes.
    let wrong_kind_for_server = client_with(Some(CLIENT_ANY));
    let wrong_kind_for_client = client_with(Some(SERVER_ANY));
    for http in [&nobody, &stranger, &basic, &wrong_kind_for_server] {
        for (method, path) in &server_routes {
            assert_401(http, &proxy, method, path, false).await;
        }
    }
    for http in [&nobody, &stranger, &basic, &wrong_kind_for_client] {
        for (method, path) in client_routes {
            assert_401(http, &proxy, method, path, true).await;
        }
    }
    // The registration survived all of that, and the health check needs no token.
    assert_eq!(poll(&owner, &proxy, &session, 0).await.0, 204);
    let health = nobody.get(proxy.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    // The operator's view of the pools needs a client token for every pool.
    for (token, status) in [
        (None, 401),
        (Some(CLIENT_ALPHA), 401),
        (Some(SERVER_ANY), 401),
        (Some(CLIENT_ANY), 200),
    ] {
        let resp = client_with(token)
            .get(proxy.url("/servers"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{token:?}");
    }
    proxy.stop().await;
}

/// The refusal comes before the body is read; the connection then closes, and the 401 says
/// so, so a client does not send its next request on it (the OAuth flow after a 401).
#[tokio::test]
async fn a_refused_token_closes_the_connection_and_says_so() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let proxy = Proxy::start(auth_config()).await;
    let body = echo(json!(1), "x").to_string();
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "POST /mcp HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         accept: application/json, text/event-stream\r\ncontent-length: {}\r\n\r\n",
        proxy.addr,
        body.len()
    );
    // The head alone: the answer comes without the body.
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 401"), "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    // The body sent late is not read: the connection ends.
    let _ = tcp.write_all(body.as_bytes()).await;
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the connection stayed open");
    proxy.stop().await;
}

#[tokio::test]
async fn a_full_call_with_tokens() {
    let proxy = Proxy::start(auth_config()).await;
    let server = client_with(Some(SERVER_ALPHA));
    let session = register(&server, &proxy, modern(Some("alpha"))).await;
    let client = client_with(Some(CLIENT_ALPHA));
    let url = proxy.url("/servers/alpha/message");
    let call = post(&client, &url, echo(json!(7), "hi"));
    let serve = async {
        let (status, item) = poll(&server, &proxy, &session, 5).await;
        assert_eq!(status, 200, "{item}");
        let answer = json!({"request_id": item["request_id"], "response":
            {"jsonrpc": "2.0", "id": item["request"]["id"], "result": {"ok": true}}});
        assert_eq!(respond(&server, &proxy, &session, answer).await.0, 200);
    };
    let ((status, body), ()) = tokio::join!(call, serve);
    assert_eq!((status, body["result"].clone()), (200, json!({"ok": true})));
    // Leaving needs the same token too.
    let left = server
        .delete(proxy.url(&format!("/register?session_id={session}")))
        .send()
        .await
        .unwrap();
    assert_eq!(left.status(), 204);
    proxy.stop().await;
}

#[tokio::test]
async fn server_tokens_are_bound_to_their_names() {
    let proxy = Proxy::start(auth_config()).await;
    let alpha = client_with(Some(SERVER_ALPHA));
    // Not `beta`'s pool, not the default pool.
    for body in [
        modern(Some("beta")),
        modern(None),
        json!({"type": "mcp_server"}),
    ] {
        let (status, v) = post(&alpha, &proxy.url("/register"), body).await;
        assert_eq!(
            (status, v["error"].clone()),
            (401, json!("unauthorized")),
            "{v}"
        );
    }
    register(&alpha, &proxy, modern(Some("alpha"))).await;
    // `*` reaches every pool, the default one included; a bare token only the default pool.
    let any = client_with(Some(SERVER_ANY));
    register(&any, &proxy, modern(Some("beta"))).await;
    register(&any, &proxy, modern(None)).await;
    let default = client_with(Some(SERVER_DEFAULT));
    register(&default, &proxy, json!({"type": "mcp_server"})).await;
    let (status, _) = post(&default, &proxy.url("/register"), modern(Some("alpha"))).await;
    assert_eq!(status, 401);
    assert_eq!(proxy.state.broker.stats().registrations, 4);
    proxy.stop().await;
}

#[tokio::test]
async fn client_tokens_are_bound_to_their_names() {
    let proxy = Proxy::start(auth_config()).await;
    let server = client_with(Some(SERVER_ANY));
    let alpha_server = register(&server, &proxy, modern(Some("alpha"))).await;
    let alpha = client_with(Some(CLIENT_ALPHA));
    for path in [
        "/message",
        "/mcp",
        "/servers/beta/message",
        "/servers/beta/mcp",
    ] {
        assert_401(&alpha, &proxy, "POST", path, true).await;
    }
    let default_only = client_with(Some(CLIENT_DEFAULT));
    assert_401(
        &default_only,
        &proxy,
        "POST",
        "/servers/alpha/message",
        true,
    )
    .await;
    // The default-pool token reaches /message (no server there: 503, past the auth check).
    let (status, body) = post(&default_only, &proxy.url("/message"), echo(json!(1), "x")).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (503, json!(-32010))
    );
    // The alpha token reaches alpha, and so does `*`.
    for token in [CLIENT_ALPHA, CLIENT_ANY] {
        let http = client_with(Some(token));
        let url = proxy.url("/servers/alpha/message");
        let call = post(&http, &url, echo(json!(2), "x"));
        let serve = async {
            let (status, item) = poll(&server, &proxy, &alpha_server, 5).await;
            assert_eq!(status, 200);
            let answer = json!({"request_id": item["request_id"], "response":
                {"jsonrpc": "2.0", "id": item["request"]["id"], "result": {}}});
            respond(&server, &proxy, &alpha_server, answer).await;
        };
        let ((status, _), ()) = tokio::join!(call, serve);
        assert_eq!(status, 200, "{token}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn a_server_cannot_read_or_answer_another_servers_requests() {
    let proxy = Proxy::start(auth_config()).await;
    let victim = client_with(Some(SERVER_ALPHA));
    let victim_id = register(&victim, &proxy, modern(Some("alpha"))).await;
    // The attacker holds a valid token (one that even reaches alpha), its own registration,
    // and somehow the victim's session id.
    let attacker = client_with(Some(SERVER_ANY));
    let attacker_id = register(&attacker, &proxy, modern(Some("beta"))).await;

    let client = client_with(Some(CLIENT_ANY));
    let call = tokio::spawn({
        let url = proxy.url("/servers/alpha/message");
        async move { post(&client, &url, echo(json!(1), "secret")).await }
    });
    // The attacker cannot take the victim's work: 401, and the item stays queued.
    wait_until("the request is queued", || async {
        proxy.state.broker.stats().pending == 1
    })
    .await;
    assert_eq!(poll(&attacker, &proxy, &victim_id, 0).await.0, 401);
    let (status, item) = poll(&victim, &proxy, &victim_id, 5).await;
    assert_eq!(status, 200, "{item}");

    // Nor answer it, nor make the victim leave.
    let forged = json!({"request_id": item["request_id"], "response":
        {"jsonrpc": "2.0", "id": 1, "result": {"forged": true}}});
    let (status, body) = respond(&attacker, &proxy, &victim_id, forged.clone()).await;
    assert_eq!(
        (status, body["error"].clone()),
        (401, json!("unauthorized"))
    );
    let left = attacker
        .delete(proxy.url(&format!("/register?session_id={victim_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(left.status(), 401);
    // Under its own registration, the forgery answers a request it was never given: 404.
    let (status, body) = respond(&attacker, &proxy, &attacker_id, forged).await;
    assert_eq!(
        (status, body["error"].clone()),
        (404, json!("unknown_request"))
    );

    // The real answer still lands, and the client gets it, not the forgery.
    let real = json!({"request_id": item["request_id"], "response":
        {"jsonrpc": "2.0", "id": item["request"]["id"], "result": {"real": true}}});
    assert_eq!(
        respond(&victim, &proxy, &victim_id, real).await,
        (200, json!({"status": "ok"}))
    );
    let (status, body) = call.await.unwrap();
    assert_eq!(
        (status, body["result"].clone()),
        (200, json!({"real": true}))
    );
    proxy.stop().await;
}

#[tokio::test]
async fn legacy_readoption_needs_a_token_for_the_default_pool() {
    let proxy = Proxy::start(auth_config()).await;
    let legacy_id = "3f2a9c0e5b7d4e1f8a6c2b9d0e4f7a13";
    // No token, or a token bound to another pool: not re-adopted.
    assert_eq!(poll(&client_with(None), &proxy, legacy_id, 0).await.0, 401);
    let alpha = client_with(Some(SERVER_ALPHA));
    assert_eq!(poll(&alpha, &proxy, legacy_id, 0).await.0, 401);
    assert_eq!(proxy.state.broker.stats().registrations, 0);
    // A token reaching the default pool re-adopts it, and owns it from then on.
    let default = client_with(Some(SERVER_DEFAULT));
    assert_eq!(poll(&default, &proxy, legacy_id, 0).await.0, 204);
    assert_eq!(proxy.state.broker.stats().registrations, 1);
    let any = client_with(Some(SERVER_ANY));
    assert_eq!(poll(&any, &proxy, legacy_id, 0).await.0, 401);
    proxy.stop().await;
}

#[tokio::test]
async fn the_token_file_is_reloaded_when_it_changes() {
    let dir = std::env::temp_dir().join(format!(
        "mcp-proxy-tokens-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tokens");
    let old = "client-old-token-0123456789";
    let new = "client-new-token-0123456789";
    std::fs::write(&file, format!("# rotation test\nclient {old} *\n")).unwrap();
    let config = Config {
        auth: Auth::new(TokenSet::new(), Some(file.clone())).unwrap(),
        ..test_config()
    };
    let proxy = Proxy::start(config).await;
    let status_with = |token: &'static str| {
        let http = client_with(Some(token));
        let url = proxy.url("/message");
        async move { post(&http, &url, echo(json!(1), "x")).await.0 }
    };
    // Past auth, nobody registered: 503.
    assert_eq!(status_with(old).await, 503);
    assert_eq!(status_with(new).await, 401);
    // Rotation: both for a while, then only the new one.
    std::fs::write(&file, format!("client {old} *\nclient {new} *\n")).unwrap();
    wait_until("the new token is accepted", || async {
        status_with(new).await == 503
    })
    .await;
    std::fs::write(&file, format!("client {new} *\n")).unwrap();
    wait_until("the old token is refused", || async {
        status_with(old).await == 401
    })
    .await;
    // A broken file is not applied: the tokens in force stay.
    std::fs::write(&file, "client short\n").unwrap();
    assert!(proxy.state.config().auth.reload().is_err());
    assert_eq!(status_with(new).await, 503);
    proxy.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn registrations_over_the_per_token_limit_get_429_with_retry_after() {
    let config = Config {
        max_registrations_per_token: 2,
        ..auth_config()
    };
    let proxy = Proxy::start(config).await;
    let http = client_with(Some(SERVER_ANY));
    for _ in 0..2 {
        register(&http, &proxy, modern(Some("alpha"))).await;
    }
    let resp = http
        .post(proxy.url("/register"))
        .json(&modern(Some("beta")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "rate_limited");
    // Another token has its own allowance.
    register(
        &client_with(Some(SERVER_ALPHA)),
        &proxy,
        modern(Some("alpha")),
    )
    .await;
    proxy.stop().await;
}

#[tokio::test]
async fn a_session_id_is_only_good_on_its_own_pools_routes() {
    use super::fake::{init_result, initialize, mcp_post, BOTH};
    let proxy = Proxy::start(auth_config()).await;
    let server = client_with(Some(SERVER_ANY));
    let alpha_server = register(&server, &proxy, modern(Some("alpha"))).await;
    let alpha = client_with(Some(CLIENT_ALPHA));
    let call = mcp_post(
        &alpha,
        &proxy.url("/servers/alpha/mcp"),
        "application/json",
        None,
        &initialize(1),
    )
    .send();
    let serve = async {
        let (status, item) = poll(&server, &proxy, &alpha_server, 5).await;
        assert_eq!(status, 200);
        let answer = json!({"request_id": item["request_id"], "response":
            {"jsonrpc": "2.0", "id": item["request"]["id"], "result": init_result()}});
        respond(&server, &proxy, &alpha_server, answer).await;
    };
    let (resp, ()) = tokio::join!(call, serve);
    let resp = resp.unwrap();
    assert_eq!(resp.status(), 200);
    let session = resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();

    // A token for the default pool only, with alpha's session id, on the routes it may use;
    // and a `*` token on another pool's route: 404 as for an unknown session, every method.
    let default_only = client_with(Some(CLIENT_DEFAULT));
    let any = client_with(Some(CLIENT_ANY));
    let reply = json!({"jsonrpc": "2.0", "id": "s-1", "result": {}});
    for (http, path) in [(&default_only, "/mcp"), (&any, "/servers/beta/mcp")] {
        let url = proxy.url(path);
        for body in [echo(json!(2), "stolen"), reply.clone()] {
            let resp = mcp_post(http, &url, BOTH, Some(&session), &body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 404, "POST {path} {body}");
            let v: Value = resp.json().await.unwrap();
            assert_eq!(v["error"]["code"], -32001);
        }
        let get = http
            .get(&url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(get.status(), 404, "GET {path}");
        let delete = http
            .delete(&url)
            .header("mcp-session-id", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(delete.status(), 404, "DELETE {path}");
    }
    let resp = default_only
        .post(proxy.url("/message"))
        .header("mcp-session-id", &session)
        .json(&echo(json!(3), "stolen"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "/message with another pool's session");

    // The session is intact for its own pool, and nothing reached the server in between.
    let delete = alpha
        .delete(proxy.url("/servers/alpha/mcp"))
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 204);
    let (status, item) = poll(&server, &proxy, &alpha_server, 5).await;
    assert_eq!(status, 200);
    assert_eq!(
        item,
        json!({"kind": "session_closed", "client_session": session})
    );
    proxy.stop().await;
}
