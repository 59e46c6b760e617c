//! A test identity provider on 127.0.0.1:0: its RFC 8414 metadata and JWKS over real HTTP,
//! an ES256 key made here, and access tokens signed with it for a subject and a resource.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The issuer, served until dropped.
pub(crate) struct Issuer {
    addr: SocketAddr,
    key: EncodingKey,
    stop: CancellationToken,
}

const KID: &str = "tunnel-test-key";

impl Issuer {
    pub(crate) async fn start() -> Issuer {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = pair.public_key_raw(); // 0x04 || x || y
        let jwk = json!({"kty": "EC", "crv": "P-256", "kid": KID, "use": "sig", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..65])});
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let url = format!("http://{addr}");
        let metadata = json!({
            "issuer": url,
            "jwks_uri": format!("{url}/jwks"),
            "authorization_endpoint": format!("{url}/authorize"),
            "token_endpoint": format!("{url}/token"),
        });
        let app = Router::new()
            .route(
                "/.well-known/oauth-authorization-server",
                get(move || async move { Json(metadata) }),
            )
            .route(
                "/jwks",
                get(move || async move { Json(json!({"keys": [jwk]})) }),
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
            key: EncodingKey::from_ec_der(&pair.serialize_der()),
            stop,
        }
    }

    /// Its issuer identifier.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// An access token for `subject` on the resource `audience`, with `scope`.
    pub(crate) fn token(&self, subject: &str, audience: &str, scope: &str) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims: Value = json!({"iss": self.url(), "sub": subject, "aud": audience,
            "client_id": "tunnel-test-client", "scope": scope, "iat": now, "exp": now + 300});
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(KID.to_owned());
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
