//! OAuth 2.1 (the MCP authorization spec): a test issuer on 127.0.0.1:0 (discovery document
//! and JWKS over real HTTP, keys generated here), tokens signed by hand. The positive path
//! with a real identity provider and the SDK clients is `cargo xtask oauth`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::routing::{get, post as post_route};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mcp_proxy::auth::oauth::{OAuth, OAuthConfig};
use mcp_proxy::auth::{Auth, TokenKind, TokenSet};
use mcp_proxy::Config;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::common::{client, echo, test_config, Proxy};
use super::fake::FakeServer;

pub(crate) const STATIC_CLIENT: &str = "static-client-token-0123456789";

/// A signing key and its JWK.
pub(crate) struct SigningKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

impl SigningKey {
    pub(crate) fn es256(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = pair.public_key_raw(); // 0x04 || x || y
        SigningKey {
            kid: kid.to_owned(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(&pair.serialize_der()),
            jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..65])}),
        }
    }

    fn ed25519(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        SigningKey {
            kid: kid.to_owned(),
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(&pair.serialize_der()),
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(pair.public_key_raw())}),
        }
    }

    pub(crate) fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// The test's authorization server: discovery, JWKS (the test changes its keys), and an
/// introspection endpoint knowing one opaque token.
pub(crate) struct Issuer {
    addr: SocketAddr,
    keys: Arc<Mutex<Vec<Value>>>,
    jwks_fetches: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Issuer {
    pub(crate) async fn start(keys: &[&SigningKey]) -> Issuer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Issuer::start_on(listener, keys).await
    }

    async fn start_on(listener: TcpListener, keys: &[&SigningKey]) -> Issuer {
        let addr = listener.local_addr().unwrap();
        let issuer = format!("http://{addr}");
        let jwks = Arc::new(Mutex::new(keys.iter().map(|k| k.jwk.clone()).collect()));
        let fetches = Arc::new(AtomicUsize::new(0));
        let metadata = json!({
            "issuer": issuer,
            "jwks_uri": format!("{issuer}/jwks"),
            "introspection_endpoint": format!("{issuer}/introspect"),
            "authorization_endpoint": format!("{issuer}/authorize"),
            "token_endpoint": format!("{issuer}/token"),
        });
        let (keys_for_route, fetches_for_route) = (jwks.clone(), fetches.clone());
        let issuer_for_introspection = issuer.clone();
        let app = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || async move { Json(metadata) }),
            )
            .route(
                "/jwks",
                get(move || async move {
                    fetches_for_route.fetch_add(1, Ordering::SeqCst);
                    Json(json!({"keys": *keys_for_route.lock().unwrap()}))
                }),
            )
            .route(
                "/introspect",
                post_route(move |headers: axum::http::HeaderMap, body: String| {
                    let issuer = issuer_for_introspection.clone();
                    async move {
                        // client_secret_basic of proxy:proxy-secret
                        let basic = format!(
                            "Basic {}",
                            base64::engine::general_purpose::STANDARD.encode("proxy:proxy-secret")
                        );
                        if headers.get("authorization").and_then(|v| v.to_str().ok())
                            != Some(basic.as_str())
                        {
                            return Json(json!({"active": false}));
                        }
                        if body.contains("token=opaque-good-token") {
                            Json(json!({"active": true, "iss": issuer, "sub": "opaque-user",
                                "client_id": "cli", "scope": "mcp:tools",
                                "aud": "http://127.0.0.1:1/servers/alpha/mcp", "exp": now() + 300}))
                        } else {
                            Json(json!({"active": false}))
                        }
                    }
                }),
            );
        let stop = CancellationToken::new();
        let shutdown = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
                .unwrap();
        });
        Issuer {
            addr,
            keys: jwks,
            jwks_fetches: fetches,
            stop,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The public URL the tests configure (the proxy's own address is not known before it starts,
/// and nothing fetches this URL: it only names the resources).
pub(crate) const PUBLIC: &str = "http://127.0.0.1:1";

pub(crate) fn oauth_config(issuer: &str, edit: impl FnOnce(&mut OAuthConfig)) -> Config {
    let mut oauth = OAuthConfig::new(PUBLIC, issuer).unwrap();
    oauth.add_scopes("mcp:tools").unwrap();
    edit(&mut oauth);
    let mut tokens = TokenSet::new();
    tokens
        .add_spec(TokenKind::Client, &format!("{STATIC_CLIENT}:*"), "test")
        .unwrap();
    Config {
        oauth: Some(Arc::new(OAuth::new(oauth))),
        auth: Auth::with_tokens(tokens),
        ..test_config()
    }
}

/// Claims of a good token for pool `alpha`.
pub(crate) fn claims(issuer: &str) -> Value {
    json!({"iss": issuer, "sub": "user-1", "client_id": "client-1", "scope": "mcp:tools other",
        "aud": format!("{PUBLIC}/servers/alpha/mcp"), "exp": now() + 300, "iat": now()})
}

/// POSTs to `path` with `token` (an echo call; `initialize` on `/mcp` paths, which need a
/// session for anything else); the status, the challenge and the body.
pub(crate) async fn call(
    proxy: &Proxy,
    path: &str,
    token: Option<&str>,
) -> (u16, Option<String>, Value) {
    let body = if path.ends_with("/mcp") {
        super::fake::initialize(1)
    } else {
        echo(json!(1), "hi")
    };
    let mut req = client()
        .post(proxy.url(path))
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, challenge, resp.json().await.unwrap_or(Value::Null))
}

/// Calls `path` with `token` while `server` answers; returns the item the server saw.
pub(crate) async fn served(proxy: &Proxy, server: &FakeServer, path: &str, token: &str) -> Value {
    let (answered, item) = tokio::join!(call(proxy, path, Some(token)), async {
        let deadline = tokio::time::Instant::now() + super::common::PATIENCE;
        loop {
            let (status, item) = super::common::poll(&client(), proxy, &server.session, 1).await;
            if status == 200 {
                server.answer(proxy, &item, json!({"content": []})).await;
                return Some(item);
            }
            if tokio::time::Instant::now() > deadline {
                return None;
            }
        }
    });
    assert_eq!(answered.0, 200, "{path}: {answered:?}");
    item.expect("the server got the call")
}

#[tokio::test]
async fn metadata_names_the_pool_resource_and_the_issuer() {
    let key = SigningKey::es256("k1");
    let issuer = Issuer::start(&[&key]).await;
    let proxy = Proxy::start(oauth_config(&issuer.url(), |c| {
        c.add_scopes("alpha/delete=admin").unwrap();
    }))
    .await;
    let resp = client()
        .get(proxy.url("/.well-known/oauth-protected-resource/servers/alpha/mcp"))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["resource"], format!("{PUBLIC}/servers/alpha/mcp"));
    assert_eq!(body["authorization_servers"], json!([issuer.url()]));
    assert_eq!(body["scopes_supported"], json!(["mcp:tools", "admin"]));
    let body: Value = client()
        .get(proxy.url("/.well-known/oauth-protected-resource/mcp"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["resource"], format!("{PUBLIC}/mcp"));
    let status = client()
        .get(proxy.url("/.well-known/oauth-protected-resource/servers/bad%20name/mcp"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
    proxy.stop().await;
}

#[tokio::test]
async fn metadata_is_404_without_oauth() {
    let proxy = Proxy::start(test_config()).await;
    let status = client()
        .get(proxy.url("/.well-known/oauth-protected-resource/mcp"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
    proxy.stop().await;
}

#[tokio::test]
async fn a_valid_token_reaches_its_pool_and_the_server_learns_who_calls() {
    let key = SigningKey::es256("k1");
    let issuer = Issuer::start(&[&key]).await;
    let proxy = Proxy::start(oauth_config(&issuer.url(), |_| {})).await;
    let server = FakeServer::register(&proxy, Some("alpha"), &["2025-11-25"]).await;
    let token = key.sign(&claims(&issuer.url()));
    for path in ["/servers/alpha/message", "/servers/alpha/mcp"] {
        let item = served(&proxy, &server, path, &token).await;
        assert_eq!(
            item["identity"],
            json!({"issuer": issuer.url(), "subject": "user-1", "client_id": "client-1",
                "scopes": ["mcp:tools", "other"]}),
            "{path}: {item}"
        );
        // No token passthrough: the server never sees the client's credentials.
        assert!(!item.to_string().contains(&token), "{item}");
        assert!(item["headers"].get("authorization").is_none(), "{item}");
    }
    // Static client tokens keep working beside OAuth, and carry no identity.
    let item = served(&proxy, &server, "/servers/alpha/message", STATIC_CLIENT).await;
    assert!(item.get("identity").is_none(), "{item}");
    server.leave().await;
    proxy.stop().await;
}

#[tokio::test]
async fn refusals_carry_the_challenge_of_rfc_6750_and_9728() {
    let key = SigningKey::es256("k1");
    let stranger_key = SigningKey::es256("k1"); // same kid, not the issuer's key
    let issuer = Issuer::start(&[&key]).await;
    let proxy = Proxy::start(oauth_config(&issuer.url(), |_| {})).await;
    let meta = format!("{PUBLIC}/.well-known/oauth-protected-resource/servers/alpha/mcp");
    let path = "/servers/alpha/mcp";

    let (status, challenge, body) = call(&proxy, path, None).await;
    assert_eq!(status, 401);
    assert_eq!(
        challenge.unwrap(),
        format!("Bearer resource_metadata=\"{meta}\", scope=\"mcp:tools\"")
    );
    assert_eq!(body["error"]["code"], -32000);

    let good = claims(&issuer.url());
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut c = good.clone();
        edit(&mut c);
        key.sign(&c)
    };
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &good,
        &EncodingKey::from_secret(b"a shared secret"),
    )
    .unwrap();
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(good.to_string())
    );
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            with(&|c| c["exp"] = json!(now() - 120)),
            "expired",
        ),
        (
            "not yet valid",
            with(&|c| c["nbf"] = json!(now() + 120)),
            "not valid yet",
        ),
        (
            "another issuer",
            with(&|c| c["iss"] = json!("http://127.0.0.1:2")),
            "another issuer",
        ),
        (
            "another pool",
            with(&|c| c["aud"] = json!(format!("{PUBLIC}/servers/beta/mcp"))),
            "another resource",
        ),
        (
            "no audience",
            with(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
            "required claim",
        ),
        (
            "no expiry",
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            "required claim",
        ),
        (
            "forged signature",
            stranger_key.sign(&good),
            "signed by no key",
        ),
        ("HS256", hs256, "algorithm"),
        ("alg none", none, "JWT"),
        ("garbage", "a.b.c".to_owned(), "well-formed"),
        (
            "opaque, no introspection",
            "opaque-token-0123456789".to_owned(),
            "not a JWT",
        ),
    ];
    for (what, token, reason) in cases {
        let (status, challenge, body) = call(&proxy, path, Some(&token)).await;
        assert_eq!(status, 401, "{what}: {body}");
        let challenge = challenge.unwrap();
        assert!(
            challenge.starts_with(&format!("Bearer resource_metadata=\"{meta}\"")),
            "{what}: {challenge}"
        );
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{what}: {challenge}"
        );
        assert!(challenge.contains(reason), "{what}: {challenge}");
        assert_eq!(body["id"], Value::Null, "{what}");
    }

    // A token for alpha is refused on the default pool and on beta, on every route.
    let token = key.sign(&good);
    for path in [
        "/mcp",
        "/message",
        "/servers/beta/mcp",
        "/servers/beta/message",
    ] {
        let (status, challenge, _) = call(&proxy, path, Some(&token)).await;
        assert_eq!(status, 401, "{path}");
        assert!(challenge.unwrap().contains("another resource"), "{path}");
    }

    // A missing scope: 403 naming every scope needed.
    let narrow = with(&|c| c["scope"] = json!("other"));
    let (status, challenge, _) = call(&proxy, path, Some(&narrow)).await;
    assert_eq!(status, 403);
    let challenge = challenge.unwrap();
    assert!(
        challenge.contains("scope=\"mcp:tools\", error=\"insufficient_scope\""),
        "{challenge}"
    );

    // A token in the query string: refused even when valid.
    let resp = client()
        .post(proxy.url(&format!("{path}?access_token={token}")))
        .header("content-type", "application/json")
        .body(echo(json!(1), "x").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("invalid_request"));
    proxy.stop().await;
}

#[tokio::test]
async fn a_tool_can_need_scopes_of_its_own() {
    let key = SigningKey::ed25519("ed");
    let issuer = Issuer::start(&[&key]).await;
    let proxy = Proxy::start(oauth_config(&issuer.url(), |c| {
        c.add_scopes("alpha/echo=echo:run").unwrap();
    }))
    .await;
    let server = FakeServer::register(&proxy, Some("alpha"), &["2025-11-25"]).await;
    let without = key.sign(&claims(&issuer.url()));
    let (status, challenge, body) = call(&proxy, "/servers/alpha/message", Some(&without)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["id"], 1, "the refusal answers the call's id");
    assert!(
        challenge.unwrap().contains("scope=\"mcp:tools echo:run\""),
        "every scope needed is named"
    );
    let mut c = claims(&issuer.url());
    c["scope"] = json!("mcp:tools echo:run");
    served(&proxy, &server, "/servers/alpha/message", &key.sign(&c)).await;
    server.leave().await;
    proxy.stop().await;
}

#[tokio::test]
async fn an_unknown_key_refreshes_the_key_set_at_most_every_few_seconds() {
    let old = SigningKey::es256("old");
    let new = SigningKey::es256("new");
    let issuer = Issuer::start(&[&old]).await;
    let proxy = Proxy::start(oauth_config(&issuer.url(), |c| {
        c.min_refresh = Duration::from_millis(300);
    }))
    .await;
    let server = FakeServer::register(&proxy, Some("alpha"), &["2025-11-25"]).await;
    served(
        &proxy,
        &server,
        "/servers/alpha/message",
        &old.sign(&claims(&issuer.url())),
    )
    .await;
    let fetched = issuer.jwks_fetches.load(Ordering::SeqCst);
    assert!(fetched >= 1);
    // The issuer rotates: a token of the new key makes the proxy fetch the set again (once
    // the last fetch is `min_refresh` old).
    issuer.keys.lock().unwrap().push(new.jwk.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    served(
        &proxy,
        &server,
        "/servers/alpha/message",
        &new.sign(&claims(&issuer.url())),
    )
    .await;
    let after_rotation = issuer.jwks_fetches.load(Ordering::SeqCst);
    assert_eq!(after_rotation, fetched + 1);
    // Tokens naming made-up keys do not make the proxy hammer the issuer.
    for i in 0..20 {
        let bogus = SigningKey::es256(&format!("bogus-{i}"));
        let (status, _, _) = call(
            &proxy,
            "/servers/alpha/message",
            Some(&bogus.sign(&claims(&issuer.url()))),
        )
        .await;
        assert_eq!(status, 401);
    }
    let after_flood = issuer.jwks_fetches.load(Ordering::SeqCst);
    assert!(after_flood <= after_rotation + 1, "{after_flood} fetches");
    server.leave().await;
    proxy.stop().await;
}

#[tokio::test]
async fn the_proxy_starts_while_the_issuer_is_down() {
    let key = SigningKey::es256("k1");
    // Reserve a port, then free it: the issuer is down when the proxy starts.
    let spot = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = spot.local_addr().unwrap();
    drop(spot);
    let issuer_url = format!("http://{addr}");
    let proxy = Proxy::start(oauth_config(&issuer_url, |_| {})).await;
    let server = FakeServer::register(&proxy, Some("alpha"), &["2025-11-25"]).await;
    let token = key.sign(&claims(&issuer_url));
    let (status, _, body) = call(&proxy, "/servers/alpha/message", Some(&token)).await;
    assert_eq!(status, 503, "{body}");
    // Static client tokens work meanwhile.
    served(&proxy, &server, "/servers/alpha/message", STATIC_CLIENT).await;
    let issuer = Issuer::start_on(TcpListener::bind(addr).await.unwrap(), &[&key]).await;
    // The warm-up retries with backoff; a request refreshes too, at most every few seconds.
    super::common::wait_until("the issuer's keys to load", || async {
        issuer.jwks_fetches.load(Ordering::SeqCst) > 0
    })
    .await;
    served(&proxy, &server, "/servers/alpha/message", &token).await;
    server.leave().await;
    proxy.stop().await;
}

#[tokio::test]
async fn opaque_tokens_are_introspected() {
    let key = SigningKey::es256("k1");
    let issuer = Issuer::start(&[&key]).await;
    let proxy = Proxy::start(oauth_config(&issuer.url(), |c| {
        c.set_introspection(None, "proxy".into(), "proxy-secret".into())
            .unwrap();
    }))
    .await;
    let server = FakeServer::register(&proxy, Some("alpha"), &["2025-11-25"]).await;
    let item = served(
        &proxy,
        &server,
        "/servers/alpha/message",
        "opaque-good-token",
    )
    .await;
    assert_eq!(item["identity"]["subject"], "opaque-user");
    let (status, challenge, _) =
        call(&proxy, "/servers/alpha/message", Some("opaque-bad-token")).await;
    assert_eq!(status, 401);
    assert!(challenge.unwrap().contains("not active"));
    // The pool's audience is checked on introspected tokens too.
    let (status, _, _) = call(&proxy, "/servers/beta/message", Some("opaque-good-token")).await;
    assert_eq!(status, 401);
    server.leave().await;
    proxy.stop().await;
}

#[tokio::test]
async fn an_audience_override_replaces_the_resource_url() {
    let key = SigningKey::es256("k1");
    let issuer = Issuer::start(&[&key]).await;
    let proxy = Proxy::start(oauth_config(&issuer.url(), |c| {
        c.add_audience("alpha=api://alpha-app").unwrap();
    }))
    .await;
    let server = FakeServer::register(&proxy, Some("alpha"), &["2025-11-25"]).await;
    let mut c = claims(&issuer.url());
    c["aud"] = json!(["something-else", "api://alpha-app"]);
    served(&proxy, &server, "/servers/alpha/message", &key.sign(&c)).await;
    let (status, _, _) = call(
        &proxy,
        "/servers/alpha/message",
        Some(&key.sign(&claims(&issuer.url()))),
    )
    .await;
    assert_eq!(status, 401, "the resource URL is no longer accepted there");
    server.leave().await;
    proxy.stop().await;
}

#[tokio::test]
async fn the_audit_log_names_who_an_access_token_holds() {
    let key = SigningKey::es256("k1");
    let issuer = Issuer::start(&[&key]).await;
    let path = std::env::temp_dir().join(format!("mcp-proxy-audit-oauth-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut config = oauth_config(&issuer.url(), |_| {});
    config.audit.log = Some(mcp_proxy::audit::AuditLog::file(&path).unwrap());
    let proxy = Proxy::start(config).await;
    let server = FakeServer::register(&proxy, Some("alpha"), &["2025-11-25"]).await;
    let token = key.sign(&claims(&issuer.url()));
    served(&proxy, &server, "/servers/alpha/message", &token).await;
    let (status, _, _) = call(&proxy, "/servers/alpha/message", Some("not.a.jwt")).await;
    assert_eq!(status, 401);
    let lines: Vec<Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(
        lines[0]["client"]["oauth"],
        json!({"issuer": issuer.url(), "subject": "user-1", "client_id": "client-1"})
    );
    assert_eq!(lines[0]["client"]["token"].as_str().unwrap().len(), 8);
    assert_eq!(
        (lines[0]["status"].as_u64(), lines[0]["pool"].as_str()),
        (Some(200), Some("alpha"))
    );
    assert!(
        !std::fs::read_to_string(&path).unwrap().contains(&token),
        "never the token"
    );
    assert_eq!(lines[1]["status"], 401);
    assert!(
        lines[1]["client"].get("oauth").is_none(),
        "a refused token names no one"
    );
    server.leave().await;
    proxy.stop().await;
    let _ = std::fs::remove_file(&path);
}
