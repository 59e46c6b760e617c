//! The real proxy in-process on 127.0.0.1:0, and helpers every module uses.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mcp_reverse::Configuration;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Deadline for anything the tests wait on.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

/// A proxy running in this process, on a runtime of its own so that killing it cuts every
/// connection at once, as a crash would.
pub(crate) struct Proxy {
    pub(crate) addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
    runtime: tokio::runtime::Runtime,
}

impl Proxy {
    pub(crate) async fn start() -> Proxy {
        Proxy::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap()).await
    }

    pub(crate) async fn start_on(listener: TcpListener) -> Proxy {
        let addr = listener.local_addr().unwrap();
        let listener = listener.into_std().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let shutdown = CancellationToken::new();
        let config = mcp_proxy::Config {
            liveness_grace: Duration::from_millis(500),
            shutdown_drain: Duration::from_secs(2),
            ..mcp_proxy::Config::default()
        };
        let token = shutdown.clone();
        let task = runtime.spawn(async move {
            let listener = TcpListener::from_std(listener)?;
            mcp_proxy::serve(listener, config, token).await
        });
        Proxy {
            addr,
            shutdown,
            task,
            runtime,
        }
    }

    /// A new proxy on the same address, as after a restart.
    pub(crate) async fn restart(self) -> Proxy {
        let addr = self.addr;
        self.stop().await;
        Proxy::start_on(TcpListener::bind(addr).await.unwrap()).await
    }

    /// Graceful stop.
    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
        self.runtime.shutdown_background();
    }

    /// Abrupt stop: every task and connection of the proxy vanishes (a crash).
    pub(crate) async fn kill(self) -> SocketAddr {
        self.runtime.shutdown_background();
        self.addr
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) async fn registrations(&self) -> u64 {
        let health: Value = reqwest::get(format!("{}/healthz", self.url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        health["registrations"].as_u64().unwrap()
    }

    pub(crate) async fn wait_registrations(&self, n: u64) {
        let start = Instant::now();
        while self.registrations().await != n {
            assert!(
                start.elapsed() < DEADLINE,
                "never reached {n} registrations"
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The reverse client's configuration the tests use: quick retries, two polls.
pub(crate) fn config(url: &str) -> Configuration {
    let mut c = Configuration::new(url).with_held_polls(2);
    c.retry_delay_seconds = 1;
    c.shutdown_grace = Duration::from_secs(5);
    c
}
