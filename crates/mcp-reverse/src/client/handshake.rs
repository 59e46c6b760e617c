//! Opening the channel (RFC 6455 section 4.1): the upgrade request over TCP, or over TLS for
//! `wss://`, and the check of the proxy's answer. Written here rather than taken from
//! tungstenite's `handshake` feature, whose SHA-1 and encoding crates (eight of them) would put
//! this embeddable crate over its dependency budget: ring, already here for TLS, has SHA-1.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use reqwest::Url;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

/// A byte stream a channel runs on: TCP, or TLS over TCP.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An open channel.
pub(super) type Socket = WebSocketStream<Box<dyn Io>>;

/// The most bytes read of the proxy's answer head, and of a refusal's body.
const MAX_ANSWER: usize = 16 * 1024;
/// The most header lines read in the proxy's answer head.
const MAX_HEADERS: usize = 64;
/// RFC 6455's constant for `Sec-WebSocket-Accept`.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why a channel did not open.
pub(super) enum Opening {
    /// The proxy answered without upgrading: its status, and its body (at most 16 KiB).
    Refused { status: u16, body: Vec<u8> },
    /// No answer, or not one a WebSocket can start from.
    Failed(String),
}

/// Opens a WebSocket to `url` (`ws://` or `wss://` with `tls`) sending `headers` with the
/// upgrade request.
pub(super) async fn open(
    url: &Url,
    tls: Option<&Arc<rustls::ClientConfig>>,
    headers: &[(&str, &str)],
) -> Result<Socket, Opening> {
    let failed = |what: &str, e: &dyn std::fmt::Display| Opening::Failed(format!("{what}: {e}"));
    let host = url
        .host_str()
        .ok_or_else(|| Opening::Failed("the channel URL has no host".into()))?;
    let port = url.port_or_known_default().unwrap_or(80);
    // `[::1]` in a URL, `::1` to connect to and to name in TLS.
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = TcpStream::connect((bare_host, port))
        .await
        .map_err(|e| failed("connect", &e))?;
    tcp.set_nodelay(true)
        .map_err(|e| failed("TCP_NODELAY", &e))?;
    let mut io: Box<dyn Io> = match (url.scheme(), tls) {
        ("wss", Some(tls)) => {
            let name = ServerName::try_from(bare_host.to_owned())
                .map_err(|e| failed("TLS server name", &e))?;
            let stream = tokio_rustls::TlsConnector::from(tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| failed("TLS", &e))?;
            Box::new(stream)
        }
        ("wss", None) => return Err(Opening::Failed("wss:// without TLS settings".into())),
        _ => Box::new(tcp),
    };

    let key = BASE64.encode(random_key()?);
    let authority = &url[url::Position::BeforeHost..url::Position::AfterPort];
    let target = &url[url::Position::BeforePath..url::Position::AfterQuery];
    let mut request = format!(
        "GET {target} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    io.write_all(request.as_bytes())
        .await
        .map_err(|e| failed("send", &e))?;
    io.flush().await.map_err(|e| failed("send", &e))?;

    let (head, mut rest) = read_head(&mut io).await?;
    let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut answer = httparse::Response::new(&mut lines);
    answer
        .parse(&head)
        .map_err(|e| failed("the proxy's answer", &e))?;
    let status = answer.code.unwrap_or(0);
    let header = |name: &str| {
        answer
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    if status != 101 {
        let length = header("content-length")
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0)
            .min(MAX_ANSWER);
        let mut chunk = [0u8; 4096];
        while rest.len() < length {
            match io.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => rest.extend_from_slice(&chunk[..n]),
            }
        }
        rest.truncate(length);
        return Err(Opening::Refused { status, body: rest });
    }
    let upgraded = header("upgrade").is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    if !upgraded || header("sec-websocket-accept").map(str::trim) != Some(&*accept_for(&key)) {
        return Err(Opening::Failed(
            "the proxy's 101 is not a WebSocket upgrade for this request".into(),
        ));
    }
    // Frames the proxy sent right behind its head (its hello) are already in `rest`.
    Ok(WebSocketStream::from_partially_read(io, rest, Role::Client, None).await)
}

/// Reads up to the end of the answer head: the head, and what came after it.
async fn read_head(io: &mut Box<dyn Io>) -> Result<(Vec<u8>, Vec<u8>), Opening> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_ANSWER {
            return Err(Opening::Failed(
                "the proxy's answer head is too large".into(),
            ));
        }
        match io.read(&mut chunk).await {
            Ok(0) => return Err(Opening::Failed("the proxy closed before answering".into())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(Opening::Failed(format!("reading the answer: {e}"))),
        }
    }
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes.
fn random_key() -> Result<[u8; 16], Opening> {
    use ring::rand::SecureRandom;
    let mut key = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| Opening::Failed("no random bytes for the WebSocket key".into()))?;
    Ok(key)
}

/// The `Sec-WebSocket-Accept` a server must answer to `key`.
fn accept_for(key: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}{ACCEPT_GUID}").as_bytes(),
    );
    BASE64.encode(digest.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_value_is_rfc_6455s() {
        // The example of RFC 6455 section 1.3.
        assert_eq!(
            accept_for("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
