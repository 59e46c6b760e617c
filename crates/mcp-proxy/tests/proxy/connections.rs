//! Connection hygiene: slow heads, stalled bodies and idle keep-alives are closed after their
//! timeouts; connections are capped in all and per address (trusted proxies exempt); held
//! polls are never cut.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::common::{client, register, test_config, wait_until, Proxy, PATIENCE};

/// Reads until the peer closes; how long that took, or `None` if it stayed open `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::sleep(within);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => return None,
            r = stream.read(&mut buf) => match r {
                Ok(0) | Err(_) => return Some(start.elapsed()),
                Ok(_) => continue,
            },
        }
    }
}

fn short_timeouts() -> mcp_proxy::Config {
    mcp_proxy::Config {
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(2),
        ..test_config()
    }
}

#[tokio::test]
async fn a_head_that_never_ends_is_closed_after_the_header_timeout() {
    let proxy = Proxy::start(short_timeouts()).await;
    let mut slow = TcpStream::connect(proxy.addr).await.unwrap();
    slow.write_all(b"POST /message HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await
        .unwrap();
    let took = closed_within(&mut slow, Duration::from_secs(5))
        .await
        .expect("the slow head is closed");
    assert!(
        took < Duration::from_secs(2),
        "closed after {took:?}, header timeout 1 s"
    );
    let metrics = client()
        .get(proxy.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("mcp_proxy_connections_closed_total{reason=\"header_timeout\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_head_dripping_a_byte_at_a_time_is_still_cut_at_the_header_timeout() {
    let proxy = Proxy::start(short_timeouts()).await;
    let mut slow = TcpStream::connect(proxy.addr).await.unwrap();
    let start = Instant::now();
    let mut closed = false;
    // A byte every 200 ms keeps the connection busy but never finishes the head.
    for b in b"GET /healthz HTTP/1.1\r\nX-A: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
        if slow.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        if closed_within(&mut slow, Duration::from_millis(200))
            .await
            .is_some()
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "the dripping head was never cut");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_stalled_body_fails_its_request_and_closes_the_connection() {
    let proxy = Proxy::start(short_timeouts()).await;
    let mut slow = TcpStream::connect(proxy.addr).await.unwrap();
    slow.write_all(
        b"POST /message HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"jsonrpc\":",
    )
    .await
    .unwrap();
    let took = closed_within(&mut slow, Duration::from_secs(5))
        .await
        .expect("the stalled body is cut");
    assert!(took < Duration::from_secs(3), "closed after {took:?}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let proxy = Proxy::start(short_timeouts()).await;
    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = conn.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // Still open after the header timeout (nothing started), closed after the idle one.
    let took = closed_within(&mut conn, Duration::from_secs(5))
        .await
        .expect("the idle connection is closed");
    assert!(
        took > Duration::from_millis(1500) && took < Duration::from_secs(3),
        "closed after {took:?}, idle timeout 2 s"
    );
}

#[tokio::test]
async fn a_held_poll_outlives_the_header_and_idle_timeouts() {
    let config = mcp_proxy::Config {
        header_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(300),
        max_poll_timeout: Duration::from_secs(3),
        ..short_timeouts()
    };
    let proxy = Proxy::start(config).await;
    let http = client();
    let id = register(
        &http,
        &proxy,
        json!({"type":"mcp_server","capabilities":{"held_polls":1,"protocol_versions":["2025-11-25"]}}),
    )
    .await;
    let start = Instant::now();
    let r = http
        .get(proxy.url(&format!("/poll?session_id={id}&timeout=2")))
        .send()
        .await
        .expect("the poll is answered, not cut");
    assert_eq!(r.status(), 204);
    assert!(start.elapsed() >= Duration::from_millis(1900));
}

#[tokio::test]
async fn connections_are_capped_per_address_and_a_closed_one_frees_its_place() {
    let config = mcp_proxy::Config {
        max_connections_per_address: 3,
        ..short_timeouts()
    };
    let proxy = Proxy::start(config).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(proxy.addr).await.unwrap());
    }
    // Wait until the proxy has admitted all three (accepts are asynchronous).
    let stats = proxy.state.metrics.connections.clone();
    wait_until("three admitted", || {
        let stats = stats.clone();
        async move { stats.open.load(std::sync::atomic::Ordering::Relaxed) == 3 }
    })
    .await;
    let mut fourth = TcpStream::connect(proxy.addr).await.unwrap();
    let took = closed_within(&mut fourth, PATIENCE)
        .await
        .expect("the fourth connection is closed unread");
    assert!(took < Duration::from_secs(1), "{took:?}");
    drop(held.pop());
    wait_until("a place freed", || {
        let stats = stats.clone();
        async move { stats.open.load(std::sync::atomic::Ordering::Relaxed) == 2 }
    })
    .await;
    let mut again = TcpStream::connect(proxy.addr).await.unwrap();
    again
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = again.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
}

#[tokio::test]
async fn connections_are_capped_in_all() {
    let config = mcp_proxy::Config {
        max_connections: 2,
        ..short_timeouts()
    };
    let proxy = Proxy::start(config).await;
    let _a = TcpStream::connect(proxy.addr).await.unwrap();
    let _b = TcpStream::connect(proxy.addr).await.unwrap();
    let stats = proxy.state.metrics.connections.clone();
    wait_until("two admitted", || {
        let stats = stats.clone();
        async move { stats.open.load(std::sync::atomic::Ordering::Relaxed) == 2 }
    })
    .await;
    let mut third = TcpStream::connect(proxy.addr).await.unwrap();
    assert!(closed_within(&mut third, PATIENCE).await.is_some());
    assert_eq!(
        stats
            .refused_total_cap
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn a_trusted_proxy_is_exempt_from_the_per_address_cap() {
    let config = mcp_proxy::Config {
        max_connections_per_address: 1,
        trusted_proxies: "127.0.0.1".parse().unwrap(),
        ..short_timeouts()
    };
    let proxy = Proxy::start(config).await;
    let _a = TcpStream::connect(proxy.addr).await.unwrap();
    let mut b = TcpStream::connect(proxy.addr).await.unwrap();
    b.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = b.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
}

#[tokio::test]
async fn an_sse_stream_outlives_the_idle_timeout() {
    let config = mcp_proxy::Config {
        header_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(300),
        sse_keep_alive: Duration::from_secs(30),
        ..short_timeouts()
    };
    let proxy = Proxy::start(config).await;
    let server = super::fake::FakeServer::register(&proxy, None, &["2025-11-25"]).await;
    let session = super::fake::open_session(&proxy, &server).await;
    let resp = client()
        .get(proxy.url("/mcp"))
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    let mut sse = super::fake::Sse::new(resp);
    let _ = sse.block().await.expect("the priming event");
    // Quiet for three idle timeouts (no keep-alive comment before 30 s), then a message.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let note = json!({"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"still here"}});
    let (s, _) = server
        .post(&proxy, json!({"client_session": session, "message": note}))
        .await;
    assert_eq!(s, 200);
    let (_, got) = sse.message().await.expect("the stream is still open");
    assert_eq!(got, note);
}
