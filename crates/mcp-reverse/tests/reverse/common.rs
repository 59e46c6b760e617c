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

/// The proxy's liveness grace: a registration whose polls and channel all dropped is dead this
/// long after, and its pending requests fail.
pub(crate) const LIVENESS_GRACE: Duration = Duration::from_millis(500);

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
        Proxy::start_with(listener, proxy_config()).await
    }

    /// A proxy that refuses the reverse channel (`--no-channels`).
    pub(crate) async fn start_without_channels() -> Proxy {
        Proxy::start_with_config(mcp_proxy::Config {
            channels: false,
            ..proxy_config()
        })
        .await
    }

    /// A proxy with `config` (from [`proxy_config`]) on a free port.
    pub(crate) async fn start_with_config(config: mcp_proxy::Config) -> Proxy {
        Proxy::start_with(TcpListener::bind("127.0.0.1:0").await.unwrap(), config).await
    }

    async fn start_with(listener: TcpListener, config: mcp_proxy::Config) -> Proxy {
        let addr = listener.local_addr().unwrap();
        let listener = listener.into_std().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let shutdown = CancellationToken::new();
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
        Proxy::start_on(rebind(addr).await).await
    }

    /// Graceful stop.
    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
        close_runtime(self.runtime).await;
    }

    /// Abrupt stop: every task and connection of the proxy vanishes (a crash).
    pub(crate) async fn kill(self) -> SocketAddr {
        close_runtime(self.runtime).await;
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

    /// How the first member of the first pool takes its items (`GET /servers`).
    pub(crate) async fn delivery(&self) -> String {
        self.member().await["delivery"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The first member of the first pool in `GET /servers` (`null` when there is none).
    pub(crate) async fn member(&self) -> Value {
        let servers: Value = reqwest::get(format!("{}/servers", self.url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        servers["pools"][0]["members"][0].clone()
    }

    /// The sum of the `/metrics` lines that start with `prefix` (0 when there is none).
    pub(crate) async fn metric(&self, prefix: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
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

/// Drops every task of `runtime` and waits until they are gone, so the proxy's sockets are
/// closed when this returns (`shutdown_background` alone closes them some time later).
async fn close_runtime(runtime: tokio::runtime::Runtime) {
    tokio::task::spawn_blocking(move || runtime.shutdown_timeout(DEADLINE))
        .await
        .unwrap();
}

/// Binds `addr` again for a restarted proxy. The port is only free once the kernel has let go
/// of the old proxy's sockets, and another test may briefly hold it as an ephemeral port, so
/// this retries until the deadline instead of failing on the first `AddrInUse`.
pub(crate) async fn rebind(addr: SocketAddr) -> TcpListener {
    let start = Instant::now();
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && start.elapsed() < DEADLINE => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("cannot bind {addr} again: {e}"),
        }
    }
}

/// The proxy's configuration the tests use: a short liveness grace and shutdown drain.
pub(crate) fn proxy_config() -> mcp_proxy::Config {
    mcp_proxy::Config {
        liveness_grace: LIVENESS_GRACE,
        shutdown_drain: Duration::from_secs(2),
        ..mcp_proxy::Config::default()
    }
}

/// The reverse client's configuration the tests use: quick retries, two polls.
pub(crate) fn config(url: &str) -> Configuration {
    let mut c = Configuration::new(url).with_held_polls(2);
    c.retry_delay_seconds = 1;
    c.shutdown_grace = Duration::from_secs(5);
    c
}
