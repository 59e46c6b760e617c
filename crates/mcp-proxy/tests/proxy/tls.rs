//! TLS: the proxy serves HTTPS from PEM files with a certificate generated for the test.

use mcp_proxy::tls::TlsConfig;
use mcp_proxy::Config;
use serde_json::json;

use super::common::{echo, post, test_config, Proxy};

/// A self-signed certificate for `localhost` and 127.0.0.1: (cert PEM, key PEM).
pub(crate) fn localhost_cert() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn a_full_call_over_https() {
    let (cert, key) = localhost_cert();
    let dir = std::env::temp_dir().join(format!("mcp-proxy-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    let config = Config {
        tls: Some(TlsConfig::from_pem_files(&cert_path, &key_path).unwrap()),
        ..test_config()
    };
    std::fs::remove_dir_all(&dir).unwrap();
    let proxy = Proxy::start(config).await;
    let https = |path: &str| format!("https://localhost:{}{path}", proxy.addr.port());
    let http = reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert.as_bytes()).unwrap())
        .build()
        .unwrap();

    // Plain HTTP on the TLS port gets nowhere.
    assert!(reqwest::Client::new()
        .get(proxy.url("/healthz"))
        .send()
        .await
        .is_err());
    // A client that does not trust the certificate is refused at the handshake.
    assert!(reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(https("/healthz"))
        .send()
        .await
        .is_err());

    let health = http.get(https("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.version(), reqwest::Version::HTTP_2, "ALPN offers h2");

    // Register, call, poll, answer: all over TLS.
    let reg = post(
        &http,
        &https("/register"),
        json!({"type": "mcp_server", "name": "files", "capabilities": {"held_polls": 0}}),
    )
    .await;
    assert_eq!(reg.0, 200, "{}", reg.1);
    let session = reg.1["session_id"].as_str().unwrap().to_owned();
    let url = https("/servers/files/message");
    let call = post(&http, &url, echo(json!(3), "tls"));
    let serve = async {
        let resp = http
            .get(https(&format!("/poll?session_id={session}&timeout=5")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let item: serde_json::Value = resp.json().await.unwrap();
        let answer = json!({"request_id": item["request_id"], "response":
            {"jsonrpc": "2.0", "id": item["request"]["id"], "result": {"text": "tls"}}});
        let (status, _) = post(
            &http,
            &https(&format!("/response?session_id={session}")),
            answer,
        )
        .await;
        assert_eq!(status, 200);
    };
    let ((status, body), ()) = tokio::join!(call, serve);
    assert_eq!(
        (status, body["result"]["text"].clone()),
        (200, json!("tls"))
    );
    proxy.stop().await;
}

#[test]
fn bad_pem_is_refused_with_the_files_name() {
    let (cert, key) = localhost_cert();
    let (_, other_key) = localhost_cert();
    for (c, k, blamed) in [
        ("not pem", key.as_str(), "cert.pem"),
        (cert.as_str(), "not pem", "key.pem"),
        (cert.as_str(), other_key.as_str(), "key.pem"),
    ] {
        let e = TlsConfig::from_pem(c.as_bytes(), k.as_bytes(), "cert.pem", "key.pem")
            .unwrap_err()
            .to_string();
        assert!(e.contains(blamed), "{e}");
    }
}
