//! What reaches the log: a registration id is the registration's only credential, so no log
//! line carries it whole, not even inside an HTTP error (reqwest names the URL, and the poll's
//! URL has `session_id=` in its query).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcp_reverse::ReverseClient;
use mcp_server::{Server, ServerConfig};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::{config, DEADLINE};

/// The registration id the fake proxy hands out; logs may show its first 8 characters only.
const REGISTRATION: &str = "mcp-reg-SECRET-0123456789abcdef";

/// Log output collected in memory.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A proxy that accepts the registration and then breaks every other request (poll,
/// deregistration) by closing the connection before answering: HTTP errors that name the URL.
async fn breaking_proxy(listener: TcpListener) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(answer_or_hang_up(socket));
    }
}

async fn answer_or_hang_up(mut socket: TcpStream) {
    let mut request = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&chunk[..n]),
        }
        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
    if !head.starts_with("post /register") {
        return; // hang up without an answer
    }
    // Read the body before answering, so that closing the socket resets nothing.
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while request.len() < head_end + length {
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&chunk[..n]),
        }
    }
    let body = json!({
        "session_id": REGISTRATION,
        "poll_endpoint": "/poll",
        "response_endpoint": "/response",
    })
    .to_string();
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = socket.write_all(answer.as_bytes()).await;
    let _ = socket.shutdown().await;
}

// A current-thread runtime: every task of the reverse client logs to this thread's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn no_log_line_carries_the_registration_id_not_even_in_an_http_error() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let proxy = tokio::spawn(breaking_proxy(listener));
    let server = Server::new(ServerConfig::new("logs", "1.0.0"));
    let reverse = ReverseClient::new(server, config(&url)).unwrap().spawn();

    // Registered, then a poll fails: the warning names the HTTP error.
    let start = Instant::now();
    while !logs.text().contains("cannot reach the proxy") {
        assert!(
            start.elapsed() < DEADLINE,
            "no poll failure logged:\n{}",
            logs.text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The deregistration fails too, and is logged (debug) with its error.
    reverse.shutdown().await.unwrap();
    proxy.abort();

    let text = logs.text();
    assert!(text.contains("registered with the proxy"), "{text}");
    assert!(text.contains("deregistration failed"), "{text}");
    assert!(
        text.contains(&REGISTRATION[..8]),
        "a short prefix is fine:\n{text}"
    );
    assert!(
        !text.contains("SECRET"),
        "the registration id leaked:\n{text}"
    );
    assert!(
        !text.contains("session_id="),
        "a URL with the id leaked:\n{text}"
    );
}
