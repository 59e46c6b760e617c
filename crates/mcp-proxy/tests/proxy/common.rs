//! Starting and stopping proxies, and small HTTP helpers.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use mcp_proxy::{AppState, Config};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Deadline for every condition the tests wait on.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

/// Short timeouts so the suite runs in seconds.
pub(crate) fn test_config() -> Config {
    Config {
        poll_timeout: Duration::from_secs(2),
        max_poll_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(10),
        expiry: Duration::from_secs(30),
        liveness_grace: Duration::from_millis(300),
        max_body_bytes: 64 * 1024,
        shutdown_drain: Duration::from_secs(2),
        sse_keep_alive: Duration::from_millis(200),
        ..Config::default()
    }
}

/// A proxy served in-process; cancelled when dropped.
pub(crate) struct Proxy {
    pub(crate) addr: SocketAddr,
    pub(crate) state: AppState,
    pub(crate) token: CancellationToken,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

impl Proxy {
    /// Starts a proxy on an ephemeral loopback port.
    pub(crate) async fn start(config: Config) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::on(listener, config)
    }

    /// Starts a proxy on a given address (a restart on the same port).
    pub(crate) async fn start_at(addr: SocketAddr, config: Config) -> Proxy {
        // The old proxy's sockets may still be closing, and another test may briefly hold the
        // port as an ephemeral one: retry `AddrInUse` until the deadline instead of failing.
        let start = std::time::Instant::now();
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(e)
                    if e.kind() == std::io::ErrorKind::AddrInUse && start.elapsed() < PATIENCE =>
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("cannot bind {addr} again: {e}"),
            }
        };
        Self::on(listener, config)
    }

    pub(crate) fn on(listener: TcpListener, config: Config) -> Proxy {
        let addr = listener.local_addr().unwrap();
        let state = AppState::new(config);
        let token = CancellationToken::new();
        let handle = tokio::spawn(mcp_proxy::serve_with_state(
            listener,
            state.clone(),
            token.clone(),
        ));
        Proxy {
            addr,
            state,
            token,
            handle: Some(handle),
        }
    }

    /// `http://addr` + path.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Cancels and waits for the server to return (it must, within the drain deadline).
    pub(crate) async fn stop(mut self) {
        self.token.cancel();
        let handle = self.handle.take().unwrap();
        tokio::time::timeout(PATIENCE, handle)
            .await
            .expect("serve returns after cancellation")
            .unwrap()
            .unwrap();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// An HTTP client that ignores proxy environment variables.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Waits until `cond` holds, or panics after [`PATIENCE`].
pub(crate) async fn wait_until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Posts a JSON-RPC body (any text) to `url`; returns the status and the body as JSON
/// (`Value::Null` when empty).
pub(crate) async fn post_raw(
    client: &reqwest::Client,
    url: &str,
    body: impl Into<String>,
) -> (u16, Value) {
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.into())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    };
    (status, value)
}

/// Posts a JSON value.
pub(crate) async fn post(client: &reqwest::Client, url: &str, body: Value) -> (u16, Value) {
    post_raw(client, url, body.to_string()).await
}

/// A JSON-RPC request.
pub(crate) fn rpc(id: Value, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// An echo tool call tagged with `text`.
pub(crate) fn echo(id: Value, text: &str) -> Value {
    rpc(
        id,
        "tools/call",
        json!({"name": "echo", "arguments": {"text": text}}),
    )
}

/// `GET /healthz` as JSON.
pub(crate) async fn health(client: &reqwest::Client, proxy: &Proxy) -> Value {
    let resp = client.get(proxy.url("/healthz")).send().await.unwrap();
    resp.json().await.unwrap()
}

/// Leaves with `DELETE /register`; asserts 204.
pub(crate) async fn leave(client: &reqwest::Client, proxy: &Proxy, session: &str) {
    let url = proxy.url(&format!("/register?session_id={session}"));
    let resp = client.delete(url).send().await.unwrap();
    assert_eq!(resp.status(), 204);
}

/// Registers by hand; returns the session id.
pub(crate) async fn register(client: &reqwest::Client, proxy: &Proxy, body: Value) -> String {
    let (status, v) = post(client, &proxy.url("/register"), body).await;
    assert_eq!(status, 200, "{v}");
    v["session_id"].as_str().unwrap().to_owned()
}

/// Polls by hand with `timeout=S`; returns the status and the item (Null on 204).
pub(crate) async fn poll(
    client: &reqwest::Client,
    proxy: &Proxy,
    session: &str,
    timeout: u64,
) -> (u16, Value) {
    let resp = client
        .get(proxy.url(&format!("/poll?session_id={session}&timeout={timeout}")))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    };
    (status, v)
}

/// Posts to `/response` by hand.
pub(crate) async fn respond(
    client: &reqwest::Client,
    proxy: &Proxy,
    session: &str,
    body: Value,
) -> (u16, Value) {
    post(
        client,
        &proxy.url(&format!("/response?session_id={session}")),
        body,
    )
    .await
}
