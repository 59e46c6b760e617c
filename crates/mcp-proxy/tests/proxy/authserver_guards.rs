//! What the built-in authorization server refuses: PKCE other than S256, a code used twice
//! or too late, redirect URIs that are not the client's (loopback ports aside), forms
//! without the browser's CSRF token, too many sign-in attempts, unknown clients, client ID
//! metadata documents on private addresses; and a document served over https on loopback
//! with a test CA, which tests alone may allow.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::authflow::{
    self, authorize_url, pkce, register, sign_in_and_allow, submit, token, Browser, PASSPHRASE,
};
use super::common::Proxy;
use super::tls::localhost_cert;

const REDIRECT: &str = "http://127.0.0.1:4321/callback";

fn alpha(proxy: &Proxy) -> String {
    proxy.url("/servers/alpha/mcp")
}

#[tokio::test]
async fn pkce_is_s256_only_and_codes_are_single_use() {
    let proxy = authflow::start(None, |_| {}).await;
    let client = register(&proxy, &[REDIRECT]).await;
    let id = client["client_id"].as_str().unwrap();
    let (verifier, challenge) = pkce();
    let browser = Browser::default();

    // plain, or no challenge at all: back to the client with invalid_request.
    let plain =
        authorize_url(&proxy, id, REDIRECT, &alpha(&proxy), &verifier).replace("S256", "plain");
    let page = browser.get(&plain).await;
    assert_eq!(page.status, 303);
    let back = page.redirect();
    assert_eq!(back["error"], "invalid_request");
    assert_eq!(back["state"], "st-1");
    assert_eq!(back["iss"], proxy.url(""));
    let none = authorize_url(&proxy, id, REDIRECT, &alpha(&proxy), &challenge)
        .replace("&code_challenge=", "&ignored=");
    assert_eq!(
        browser.get(&none).await.redirect()["error"],
        "invalid_request"
    );
    // A resource that is not a pool of this proxy.
    let other = authorize_url(
        &proxy,
        id,
        REDIRECT,
        "https://elsewhere.example/mcp",
        &challenge,
    );
    assert_eq!(
        browser.get(&other).await.redirect()["error"],
        "invalid_target"
    );

    let back = sign_in_and_allow(
        &browser,
        &proxy,
        &authorize_url(&proxy, id, REDIRECT, &alpha(&proxy), &challenge),
    )
    .await;
    assert_eq!(back["iss"], proxy.url(""), "RFC 9207");
    assert_eq!(back["state"], "st-1");
    let code = back["code"].clone();
    let exchange = |verifier: String, code: String| {
        let proxy = &proxy;
        async move {
            token(
                proxy,
                &[
                    ("grant_type", "authorization_code"),
                    ("client_id", id),
                    ("code", &code),
                    ("redirect_uri", REDIRECT),
                    ("code_verifier", &verifier),
                ],
            )
            .await
        }
    };
    // A wrong verifier fails, and uses the code up.
    let (status, body) = exchange(format!("{verifier}-wrong"), code.clone()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    let (status, _) = exchange(verifier.clone(), code).await;
    assert_eq!(status, 400, "a code is taken by its first exchange");

    // Signed in and consented already: the next authorization comes straight back.
    let page = browser
        .get(&authorize_url(
            &proxy,
            id,
            REDIRECT,
            &alpha(&proxy),
            &challenge,
        ))
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    let code = page.redirect()["code"].clone();
    let (status, tokens) = exchange(verifier.clone(), code.clone()).await;
    assert_eq!(status, 200, "{tokens}");
    // The same code again: refused, and the tokens it gave are revoked.
    let (status, _) = exchange(verifier.clone(), code).await;
    assert_eq!(status, 400);
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let (status, _) = token(
        &proxy,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", id),
            ("refresh_token", refresh),
        ],
    )
    .await;
    assert_eq!(status, 400, "a code used twice revokes its family");
    proxy.stop().await;
}

#[tokio::test]
async fn codes_expire() {
    let proxy = authflow::start(None, |s| s.code_lifetime = Duration::from_secs(1)).await;
    let client = register(&proxy, &[REDIRECT]).await;
    let id = client["client_id"].as_str().unwrap();
    let (verifier, challenge) = pkce();
    let back = sign_in_and_allow(
        &Browser::default(),
        &proxy,
        &authorize_url(&proxy, id, REDIRECT, &alpha(&proxy), &challenge),
    )
    .await;
    // What is tested is time passing: the store keeps whole seconds.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, body) = token(
        &proxy,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", id),
            ("code", &back["code"]),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    proxy.stop().await;
}

#[tokio::test]
async fn redirects_must_be_the_clients_and_errors_before_that_are_pages() {
    let proxy = authflow::start(None, |_| {}).await;
    let client = register(&proxy, &[REDIRECT, "https://app.example/cb"]).await;
    let id = client["client_id"].as_str().unwrap();
    let (_, challenge) = pkce();
    let browser = Browser::default();
    // A loopback redirect on another port is the same redirect (RFC 8252 §7.3).
    let other_port = authorize_url(
        &proxy,
        id,
        "http://127.0.0.1:55555/callback",
        &alpha(&proxy),
        &challenge,
    );
    assert_eq!(browser.get(&other_port).await.status, 200);
    for bad in [
        "http://127.0.0.1:4321/other",
        "https://app.example/cb/",
        "https://evil.example/cb",
        "http://localhost.evil.example:4321/callback",
    ] {
        let page = browser
            .get(&authorize_url(&proxy, id, bad, &alpha(&proxy), &challenge))
            .await;
        assert_eq!(page.status, 400, "{bad}");
        assert!(
            page.headers.get("location").is_none(),
            "no open redirect: {bad}"
        );
        assert!(page.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'"));
    }
    // An unknown client: a page, never a redirect.
    let page = browser
        .get(&authorize_url(
            &proxy,
            "mcp-client-nope",
            REDIRECT,
            &alpha(&proxy),
            &challenge,
        ))
        .await;
    assert_eq!(page.status, 400);
    assert!(page.headers.get("location").is_none());
    // And at the token endpoint: 401 invalid_client, so the client registers again.
    let (status, body) = token(
        &proxy,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "mcp-client-nope"),
            ("refresh_token", "x"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    // Registration refuses redirect URIs that could leak codes.
    for uris in [
        json!(["http://app.example/cb"]),
        json!(["javascript:alert(1)"]),
        json!([]),
    ] {
        let resp = authflow::http()
            .post(proxy.url("/oauth/register"))
            .json(&json!({"redirect_uris": uris}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{uris}");
    }
    // A web page's simple request (`text/plain`, no preflight) registers nothing.
    let resp = authflow::http()
        .post(proxy.url("/oauth/register"))
        .header("content-type", "text/plain")
        .body(json!({"redirect_uris": [REDIRECT]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    proxy.stop().await;
}

#[tokio::test]
async fn forms_need_the_browsers_csrf_token_and_sign_ins_are_limited() {
    let proxy = authflow::start(None, |_| {}).await;
    let client = register(&proxy, &[REDIRECT]).await;
    let id = client["client_id"].as_str().unwrap();
    let (_, challenge) = pkce();
    let browser = Browser::default();
    let login = browser
        .get(&authorize_url(
            &proxy,
            id,
            REDIRECT,
            &alpha(&proxy),
            &challenge,
        ))
        .await;
    // The same form from a browser without the cookie (a page on another site posting it).
    let stranger = Browser::default();
    let forged = submit(
        &stranger,
        &proxy,
        &login,
        "login",
        &[("password", PASSPHRASE)],
    )
    .await;
    assert_eq!(forged.status, 403);
    assert!(
        forged.headers.get("set-cookie").is_none(),
        "nobody signed in"
    );
    // The right cookie with a form that lost its token.
    let mut form: Vec<(String, String)> = login
        .hidden()
        .into_iter()
        .filter(|(k, _)| k != "csrf")
        .collect();
    form.push(("action".into(), "login".into()));
    form.push(("password".into(), PASSPHRASE.into()));
    assert_eq!(
        browser
            .post(&proxy.url("/oauth/authorize"), &form)
            .await
            .status,
        403
    );
    // "Allow" without signing in shows the login page again.
    let allow = submit(&browser, &proxy, &login, "allow", &[]).await;
    assert_eq!(allow.status, 401);
    assert!(allow.body.contains("expired"));

    // Wrong passphrases: a page each, then 429.
    let mut limited = false;
    for _ in 0..20 {
        let page = submit(
            &browser,
            &proxy,
            &login,
            "login",
            &[("password", "not the passphrase")],
        )
        .await;
        match page.status {
            401 => assert!(page.body.contains("Wrong")),
            429 => {
                assert!(page.headers.contains_key("retry-after"));
                limited = true;
                break;
            }
            other => panic!("{other}: {}", page.body),
        }
    }
    assert!(limited, "sign-in attempts are limited");
    // Even the right passphrase waits now.
    let page = submit(
        &browser,
        &proxy,
        &login,
        "login",
        &[("password", PASSPHRASE)],
    )
    .await;
    assert_eq!(page.status, 429);
    proxy.stop().await;
}

#[tokio::test]
async fn open_registration_is_capped() {
    let proxy = authflow::start(None, |s| s.max_clients = 2).await;
    register(&proxy, &[REDIRECT]).await;
    register(&proxy, &[REDIRECT]).await;
    let resp = authflow::http()
        .post(proxy.url("/oauth/register"))
        .json(&json!({"redirect_uris": [REDIRECT]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    proxy.stop().await;
}

#[tokio::test]
async fn registrations_that_never_get_a_token_free_their_place() {
    let proxy = authflow::start(None, |s| {
        s.max_clients = 1;
        s.unused_client_lifetime = std::time::Duration::from_millis(300);
    })
    .await;
    register(&proxy, &[REDIRECT]).await;
    let again = || async {
        authflow::http()
            .post(proxy.url("/oauth/register"))
            .json(&json!({"redirect_uris": [REDIRECT]}))
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(again().await, 503, "the cap holds");
    // Unused, the registration lapses and the place is free again.
    let start = std::time::Instant::now();
    while again().await != 201 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "never freed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    proxy.stop().await;
}

/// Serves `document` at `/client.json` over https on 127.0.0.1 with a fresh certificate;
/// its port and the certificate (PEM).
async fn serve_document(
    document: impl Fn(u16) -> String + Send + Sync + 'static,
    stop: CancellationToken,
) -> (u16, String) {
    let (cert, key) = localhost_cert();
    let chain = rustls_pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    use rustls_pki_types::pem::PemObject;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let document = Arc::new(document);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => accepted.unwrap(),
            };
            let (acceptor, document) = (acceptor.clone(), document.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = document(port);
                let answer = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, cert)
}

#[tokio::test]
async fn a_client_id_metadata_document_on_loopback_needs_the_test_ca() {
    let stop = CancellationToken::new();
    let (port, ca) = serve_document(
        |port| json!({"client_id": format!("https://127.0.0.1:{port}/client.json"), "client_name": "CIMD client",
            "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}).to_string(),
        stop.clone(),
    )
    .await;
    let client_id = format!("https://127.0.0.1:{port}/client.json");
    let (verifier, challenge) = pkce();

    // A proxy without the test flag refuses a loopback document (SSRF guard).
    let strict = authflow::start(None, |_| {}).await;
    let page = Browser::default()
        .get(&authorize_url(
            &strict,
            &client_id,
            REDIRECT,
            &alpha(&strict),
            &challenge,
        ))
        .await;
    assert_eq!(page.status, 400);
    assert!(page.headers.get("location").is_none());
    strict.stop().await;

    // With the test CA, the document is the client: no registration at all.
    let proxy = authflow::start(None, |s| s.cimd_test_ca = Some(ca)).await;
    let browser = Browser::default();
    let login = browser
        .get(&authorize_url(
            &proxy,
            &client_id,
            REDIRECT,
            &alpha(&proxy),
            &challenge,
        ))
        .await;
    assert!(login.body.contains("CIMD client"), "{}", login.body);
    let back = sign_in_and_allow(
        &browser,
        &proxy,
        &authorize_url(&proxy, &client_id, REDIRECT, &alpha(&proxy), &challenge),
    )
    .await;
    let (status, tokens) = token(
        &proxy,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
            ("code", &back["code"]),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    // A redirect the document does not list is refused.
    let page = browser
        .get(&authorize_url(
            &proxy,
            &client_id,
            "https://evil.example/cb",
            &alpha(&proxy),
            &challenge,
        ))
        .await;
    assert_eq!(page.status, 400);
    stop.cancel();
    proxy.stop().await;
}
