//! The stack every test runs: proxy, reverse client and server in this process, and helpers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcp_client::{Client, ClientOptions};
use mcp_protocol::jsonrpc::Notification;
use mcp_protocol::mcp::notifications::LoggingLevel;
use mcp_protocol::mcp::tools::CallToolResult;
use mcp_protocol::RequestId;
use mcp_reverse::{Configuration, ReverseClient, ReverseHandle};
use mcp_server::{demo, tool_builder, Server, ServerConfig, ToolError};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Deadline for anything a test waits on.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

/// A proxy on 127.0.0.1:0, served in this process until [`Proxy::stop`].
pub(crate) struct Proxy {
    pub(crate) url: String,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl Proxy {
    pub(crate) async fn start() -> Proxy {
        Proxy::start_with(|_, _| {}).await
    }

    /// [`Proxy::start`] with the test's settings, told the proxy's own URL.
    pub(crate) async fn start_with(edit: impl FnOnce(&mut mcp_proxy::Config, &str)) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let mut config = mcp_proxy::Config {
            liveness_grace: Duration::from_millis(500),
            shutdown_drain: Duration::from_secs(2),
            ..mcp_proxy::Config::default()
        };
        edit(&mut config, &url);
        let task = tokio::spawn(mcp_proxy::serve(listener, config, shutdown.clone()));
        Proxy {
            url,
            shutdown,
            task,
        }
    }

    /// The proxy's `/mcp` endpoint.
    pub(crate) fn mcp(&self) -> String {
        format!("{}/mcp", self.url)
    }

    /// Waits until `/healthz` counts `n` registrations.
    pub(crate) async fn wait_registrations(&self, n: u64) {
        let start = Instant::now();
        loop {
            let health: Value = reqwest::get(format!("{}/healthz", self.url))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if health["registrations"] == n {
                return;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "never reached {n} registrations"
            );
            // A polling interval, bounded by the deadline above.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// What the test-local `hold` tool saw: each call's id and cancellation token.
#[derive(Default)]
pub(crate) struct Held {
    started: Notify,
    calls: Mutex<Vec<(RequestId, CancellationToken)>>,
}

impl Held {
    /// Waits for the `n`-th call (1-based) to be running in its handler.
    pub(crate) async fn call(&self, n: usize) -> (RequestId, CancellationToken) {
        let wait = async {
            loop {
                let started = self.started.notified();
                if let Some(call) = self.calls.lock().unwrap().get(n - 1).cloned() {
                    return call;
                }
                started.await;
            }
        };
        tokio::time::timeout(DEADLINE, wait)
            .await
            .expect("the hold tool never started")
    }
}

/// Proxy, server (the demo's tools with the test tools, and `hold`) and reverse client.
pub(crate) struct Stack {
    pub(crate) proxy: Proxy,
    pub(crate) server: Server,
    pub(crate) held: Arc<Held>,
    reverse: ReverseHandle,
}

impl Stack {
    pub(crate) async fn start() -> Stack {
        let proxy = Proxy::start().await;
        let server = Server::new(ServerConfig::new("tunnel-test", "1.0.0"));
        demo::register_seed_tools(&server, true);
        let held = Arc::new(Held::default());
        let slot = held.clone();
        server.register_tool(
            tool_builder("hold")
                .with_description("Logs, then runs until cancelled; the test sees its token")
                .build(),
            move |_args, ctx| {
                let slot = slot.clone();
                async move {
                    let token = ctx.cancellation_token().clone();
                    slot.calls
                        .lock()
                        .unwrap()
                        .push((ctx.request_id().clone(), token));
                    slot.started.notify_waiters();
                    // Something on the stream before the answer (when the client wants logs).
                    ctx.log(LoggingLevel::Info, "hold started");
                    ctx.cancelled().await;
                    Err::<CallToolResult, _>(ToolError::new("cancelled"))
                }
            },
        );
        let mut config = Configuration::new(&proxy.url).with_held_polls(2);
        config.retry_delay_seconds = 1;
        config.shutdown_grace = Duration::from_secs(2);
        let reverse = ReverseClient::new(server.clone(), config).unwrap().spawn();
        proxy.wait_registrations(1).await;
        Stack {
            proxy,
            server,
            held,
            reverse,
        }
    }

    pub(crate) async fn stop(self) {
        self.reverse.shutdown().await.unwrap();
        self.proxy.stop().await;
    }
}

/// Notifications a client received, in order.
pub(crate) type Notes = Arc<Mutex<Vec<Notification>>>;

/// Client options that record notifications in the returned list.
pub(crate) fn recording() -> (ClientOptions, Notes) {
    let notes = Notes::default();
    let sink = notes.clone();
    let options = ClientOptions {
        on_notification: Some(Arc::new(move |n| sink.lock().unwrap().push(n))),
        ..ClientOptions::default()
    };
    (options, notes)
}

/// An initialized client of `url` with `options`.
pub(crate) async fn client(url: &str, options: ClientOptions) -> Client {
    let client = Client::with_options(url, options).unwrap();
    client.initialize().await.unwrap();
    client
}

/// Waits until `ready` holds, checking whenever `notes` may have changed.
pub(crate) async fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < DEADLINE, "never saw {what}");
        // A polling interval, bounded by the deadline above.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
