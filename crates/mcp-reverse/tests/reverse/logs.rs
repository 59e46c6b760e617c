//! What reaches the log: a registration id is the registration's only credential, so no log
//! line carries it whole, not even inside an HTTP error (reqwest names the URL, and the poll's
//! URL has `session_id=` in its query).

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::DEADLINE;
use crate::stdio::fixture_path;

/// The registration id the fake proxy hands out; logs may show its first 8 characters only.
const REGISTRATION: &str = "mcp-reg-SECRET-0123456789abcdef";

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

// The `mcp-reverse` command, whose log is its stderr: a process of its own, so nothing else
// running in this test binary can interfere with what is logged.
#[tokio::test]
async fn no_log_line_carries_the_registration_id_not_even_in_an_http_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let proxy = tokio::spawn(breaking_proxy(listener));
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-reverse"))
        .args(["--proxy", &url, "--retry-delay", "1", "--"])
        .args(["python3", "-u", &fixture_path()])
        .env("RUST_LOG", "mcp_reverse=debug")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the command starts");
    let logs = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let logs = logs.clone();
        let mut stderr = command.stderr.take().unwrap();
        tokio::spawn(async move {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut chunk).await {
                logs.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        })
    };
    let text = || String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();

    // Registered, then a poll fails: the warning names the HTTP error.
    let start = Instant::now();
    while !text().contains("cannot reach the proxy") {
        assert!(
            start.elapsed() < DEADLINE,
            "no poll failure logged:\n{}",
            text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Stopped, it deregisters, which fails too and is logged (debug) with its error.
    let pid = command.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    tokio::time::timeout(DEADLINE, command.wait())
        .await
        .expect("the command stops")
        .unwrap();
    reader.await.unwrap();
    proxy.abort();

    let text = text();
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
