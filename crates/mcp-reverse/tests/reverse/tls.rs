//! HTTPS end to end on loopback: the proxy with a generated certificate and tokens, the
//! reverse client and mcp-client trusting that certificate as a private CA.

use std::time::Duration;

use mcp_client::{text_of, Client, ClientOptions};
use mcp_protocol::mcp::tools::CallToolResult;
use mcp_proxy::auth::{Auth, TokenKind, TokenSet};
use mcp_proxy::tls::TlsConfig;
use mcp_reverse::{Error, ReverseClient, Transport};
use mcp_server::{tool_builder, Server, ServerConfig};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::common::{config, DEADLINE};

const SERVER_TOKEN: &str = "tls-test-server-token-0123";
const CLIENT_TOKEN: &str = "tls-test-client-token-0123";

/// A self-signed certificate for `localhost`: (cert PEM, key PEM).
fn localhost_cert() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

fn echo_server() -> Server {
    let server = Server::new(ServerConfig::new("tls echo", "1.0.0"));
    server.register_tool(
        tool_builder("echo")
            .with_string_param("text", "Text to echo", true)
            .build(),
        |args, _ctx| async move {
            Ok(CallToolResult::text(
                args["text"].as_str().unwrap_or_default().to_owned(),
            ))
        },
    );
    server
}

/// An HTTPS proxy with a server token for pool `files` and a client token for it.
async fn https_proxy(cert: &str, key: &str) -> (String, CancellationToken) {
    let mut tokens = TokenSet::new();
    tokens
        .add_spec(TokenKind::Server, &format!("{SERVER_TOKEN}:files"), "test")
        .unwrap();
    tokens
        .add_spec(TokenKind::Client, &format!("{CLIENT_TOKEN}:files"), "test")
        .unwrap();
    let config = mcp_proxy::Config {
        auth: Auth::with_tokens(tokens),
        tls: Some(TlsConfig::from_pem(cert.as_bytes(), key.as_bytes(), "cert", "key").unwrap()),
        liveness_grace: Duration::from_millis(500),
        shutdown_drain: Duration::from_secs(2),
        ..mcp_proxy::Config::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let shutdown = CancellationToken::new();
    tokio::spawn(mcp_proxy::serve(listener, config, shutdown.clone()));
    (format!("https://localhost:{port}"), shutdown)
}

#[tokio::test]
async fn a_full_call_over_https_with_tokens() {
    let (cert, key) = localhost_cert();
    let (base, shutdown) = https_proxy(&cert, &key).await;

    let reverse = ReverseClient::new(
        echo_server(),
        config(&base)
            .with_name("files")
            .with_token(SERVER_TOKEN)
            .with_ca_cert_pem(cert.clone())
            // The channel only, over wss:// with the same CA: no falling back to polls.
            .with_transport(Transport::Ws),
    )
    .unwrap()
    .spawn();

    for path in ["/servers/files/mcp", "/servers/files/message"] {
        let client = Client::with_options(
            &format!("{base}{path}"),
            ClientOptions {
                token: Some(CLIENT_TOKEN.to_owned()),
                ca_cert: Some(cert.clone()),
                ..ClientOptions::default()
            },
        )
        .unwrap();
        // The reverse client may still be registering: retry until the deadline.
        let start = std::time::Instant::now();
        let answer = loop {
            match client.initialize().await {
                Ok(_) => break client.call_tool("echo", json!({"text": "over tls"})).await,
                Err(e) => assert!(start.elapsed() < DEADLINE, "{path}: never served: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(text_of(&answer.unwrap()), "over tls", "{path}");
    }

    // Without the CA, mcp-client refuses the certificate; without the token, the proxy refuses.
    let untrusting = Client::with_options(
        &format!("{base}/servers/files/message"),
        ClientOptions {
            token: Some(CLIENT_TOKEN.to_owned()),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    assert!(matches!(
        untrusting.initialize().await,
        Err(mcp_client::Error::Transport(_))
    ));
    let tokenless = Client::with_options(
        &format!("{base}/servers/files/message"),
        ClientOptions {
            ca_cert: Some(cert.clone()),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    match tokenless.initialize().await {
        Err(mcp_client::Error::Status { status, .. }) => assert_eq!(status, 401),
        other => panic!("expected 401, got {other:?}"),
    }

    reverse.shutdown().await.unwrap();
    shutdown.cancel();
}

#[tokio::test]
async fn the_reverse_client_stops_on_a_token_the_proxy_refuses() {
    let (cert, key) = localhost_cert();
    let (base, shutdown) = https_proxy(&cert, &key).await;
    // The right token, but for a pool it is not bound to: refused for good, not retried.
    let wrong_pool = ReverseClient::new(
        echo_server(),
        config(&base)
            .with_name("other")
            .with_token(SERVER_TOKEN)
            .with_ca_cert_pem(cert.clone()),
    )
    .unwrap();
    let outcome = tokio::time::timeout(DEADLINE, wrong_pool.run())
        .await
        .expect("a refused registration ends the run");
    assert!(
        matches!(outcome, Err(Error::Rejected { status: 401, .. })),
        "{outcome:?}"
    );
    // A CA that is not PEM is a configuration error, found before anything connects.
    assert!(ReverseClient::new(echo_server(), config(&base).with_ca_cert_pem("nope")).is_err());
    shutdown.cancel();
}
