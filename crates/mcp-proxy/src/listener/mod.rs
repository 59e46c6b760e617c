//! The accept loop every listener (plain and TLS) runs: connection caps in all and per
//! address, TCP_NODELAY, the TLS handshake, and each connection's deadlines (a request head
//! that does not finish, a request body that stalls, a kept-alive connection left idle), then
//! the graceful drain on shutdown.
//!
//! axum's `serve` has no header timeout and no cap: 1,500 half-sent heads stayed open for
//! minutes. This loop owns those limits; hyper (through `hyper-util`'s auto builder, HTTP/1.1
//! and HTTP/2, upgrades allowed) still does the HTTP. A connection with a request in flight
//! has no connection deadline, so held polls and SSE streams are never cut (`watch`).

mod watch;

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::config::Config;
use crate::peer::{address_key, TrustedProxies};
use crate::tls::{TlsConfig, HANDSHAKE_TIMEOUT};
use watch::{Expiry, HeldBody, ReadToEnd, StallGuardedBody, Watch, WatchedIo};

/// Largest header block an HTTP/2 caller may send (HTTP/1's is hyper's ~400 KiB buffer).
pub const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;
/// Concurrent HTTP/2 streams per connection (each may be a held poll).
pub const MAX_CONCURRENT_STREAMS: u32 = 256;

/// The connection limits of [`Config`], gathered for the accept loop.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// From the first byte of a request head to its end.
    pub header_timeout: Duration,
    /// The longest a request body may go without a byte while it is read.
    pub body_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Open connections in all; 0 = no cap.
    pub max_connections: usize,
    /// Open connections from one address (trusted proxies exempt); 0 = no cap.
    pub max_connections_per_address: usize,
    /// Networks whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
}

impl ConnectionLimits {
    /// The limits the accept loop applies to every connection.
    pub(crate) fn of(config: &Config) -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: config.header_timeout,
            body_timeout: config.body_timeout,
            idle_timeout: config.idle_timeout,
            max_connections: config.max_connections,
            max_connections_per_address: config.max_connections_per_address,
            trusted_proxies: config.trusted_proxies.clone(),
        }
    }
}

/// Counters of the accept loop, for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    /// Connections open now.
    pub open: AtomicU64,
    /// Connections accepted since start.
    pub accepted: AtomicU64,
    /// Connections refused because `max_connections` were open.
    pub refused_total_cap: AtomicU64,
    /// Connections refused because their address had `max_connections_per_address` open.
    pub refused_address_cap: AtomicU64,
    /// Connections closed because a request head did not finish in time.
    pub closed_header_timeout: AtomicU64,
    /// Connections closed after idling.
    pub closed_idle: AtomicU64,
    /// TLS handshakes that failed or timed out.
    pub tls_failed: AtomicU64,
}

/// Open connections, counted in all and per address; a [`Slot`] is one of them.
#[derive(Debug)]
struct Counts {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// One admitted connection; dropping it frees its place.
struct Slot {
    counts: Arc<Mutex<Counts>>,
    stats: Arc<ConnectionStats>,
    /// The address it counts against, `None` for a trusted proxy.
    address: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = lock(&self.counts);
        c.total -= 1;
        if let Some(a) = self.address {
            if let Some(n) = c.by_address.get_mut(&a) {
                *n -= 1;
                if *n == 0 {
                    c.by_address.remove(&a);
                }
            }
        }
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

fn lock(counts: &Mutex<Counts>) -> std::sync::MutexGuard<'_, Counts> {
    // Counter arithmetic only; never held across an await.
    counts.lock().unwrap_or_else(|e| e.into_inner())
}

/// Admits a connection from `peer`, or says which cap refused it.
fn admit(
    counts: &Arc<Mutex<Counts>>,
    stats: &Arc<ConnectionStats>,
    limits: &ConnectionLimits,
    peer: IpAddr,
) -> Option<Slot> {
    let address = (!limits.trusted_proxies.trusts(peer)).then(|| address_key(peer));
    let mut c = lock(counts);
    if limits.max_connections > 0 && c.total >= limits.max_connections {
        stats.refused_total_cap.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    if let Some(a) = address {
        let n = c.by_address.entry(a).or_insert(0);
        if limits.max_connections_per_address > 0 && *n >= limits.max_connections_per_address {
            stats.refused_address_cap.fetch_add(1, Ordering::Relaxed);
            if *n == 0 {
                c.by_address.remove(&a);
            }
            return None;
        }
        *n += 1;
    }
    c.total += 1;
    stats.open.fetch_add(1, Ordering::Relaxed);
    stats.accepted.fetch_add(1, Ordering::Relaxed);
    Some(Slot {
        counts: counts.clone(),
        stats: stats.clone(),
        address,
    })
}

/// Serves `router` on `listener` (TLS when `tls` is set) until `shutdown` is cancelled, then
/// lets open connections finish for up to `drain` and closes the rest.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsConfig>,
    router: Router,
    limits: ConnectionLimits,
    stats: Arc<ConnectionStats>,
    shutdown: CancellationToken,
    drain: Duration,
) -> io::Result<()> {
    let counts = Arc::new(Mutex::new(Counts {
        total: 0,
        by_address: HashMap::new(),
    }));
    let limits = Arc::new(limits);
    let tracker = TaskTracker::new();
    // Cancelled when the drain deadline passes: whatever is still open is closed.
    let hard_stop = CancellationToken::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off as axum's listener does.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(slot) = admit(&counts, &stats, &limits, peer.ip()) else {
            debug!(peer = %peer.ip(), "connection refused: connection cap reached");
            // Dropping the socket closes it: no bytes are read from a refused caller.
            continue;
        };
        // Nagle's algorithm meeting delayed ACKs stalls bodies of 8 KiB and more by ~40-90 ms.
        if let Err(e) = tcp.set_nodelay(true) {
            warn!(error = %e, "could not set TCP_NODELAY");
        }
        let conn = Connection {
            peer,
            router: router.clone(),
            limits: limits.clone(),
            stats: stats.clone(),
            shutdown: shutdown.clone(),
            hard_stop: hard_stop.clone(),
        };
        let tls = tls.clone();
        tracker.spawn(async move {
            let _slot = slot;
            match tls {
                None => conn.serve(tcp, false).await,
                Some(tls) => conn.serve_tls(tcp, &tls).await,
            }
        });
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
        warn!(
            ?drain,
            "drain deadline passed; closing remaining connections"
        );
        hard_stop.cancel();
        // Each connection task ends at once on `hard_stop`; wait so none outlives serve.
        let _ = tokio::time::timeout(Duration::from_secs(1), tracker.wait()).await;
    }
    Ok(())
}

/// One accepted connection and what it needs to serve itself.
struct Connection {
    peer: SocketAddr,
    router: Router,
    limits: Arc<ConnectionLimits>,
    stats: Arc<ConnectionStats>,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
}

impl Connection {
    /// Handshakes (within [`HANDSHAKE_TIMEOUT`], which also bounds a silent TLS peer), then
    /// serves.
    async fn serve_tls(self, tcp: TcpStream, tls: &TlsConfig) {
        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(tcp));
        let stream = tokio::select! {
            _ = self.hard_stop.cancelled() => return,
            r = handshake => match r {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    self.stats.tls_failed.fetch_add(1, Ordering::Relaxed);
                    return debug!(peer = %self.peer.ip(), error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    self.stats.tls_failed.fetch_add(1, Ordering::Relaxed);
                    return debug!(peer = %self.peer.ip(), "TLS handshake timed out");
                }
            },
        };
        let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        self.serve(stream, http2).await
    }

    /// Serves HTTP on `io` until the peer leaves, a deadline passes, or the server stops.
    async fn serve<T>(self, io: T, http2: bool)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let watch = Watch::new(http2);
        let io = TokioIo::new(WatchedIo::new(io, watch.clone()));
        let service = {
            let watch = watch.clone();
            let peer = self.peer;
            let router = self.router.clone();
            let limits = self.limits.clone();
            hyper::service::service_fn(move |req: Request<Incoming>| {
                let in_flight = watch.begin();
                let router = router.clone();
                let limits = limits.clone();
                async move {
                    let (mut parts, body) = req.into_parts();
                    let client = limits.trusted_proxies.client(peer.ip(), &parts.headers);
                    parts.extensions.insert(ConnectInfo(peer));
                    parts.extensions.insert(client);
                    let read = ReadToEnd::default();
                    let body = StallGuardedBody::new(body, limits.body_timeout, read.clone());
                    let mut response = router
                        .oneshot(Request::from_parts(parts, Body::new(body)))
                        .await
                        .unwrap_or_else(|never: Infallible| match never {});
                    if !read.done() {
                        // Answered before its body was read (a refused token, Origin, type,
                        // size or rate): hyper closes such a connection, so say so, or the
                        // client sends its next request on it (the official Python SDK then
                        // failed its OAuth flow with "Server disconnected").
                        response.headers_mut().insert(
                            axum::http::header::CONNECTION,
                            axum::http::HeaderValue::from_static("close"),
                        );
                    }
                    Ok::<_, Infallible>(response.map(|b| Body::new(HeldBody::new(b, in_flight))))
                }
            })
        };
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            // Our own head deadline (see `watch`): hyper's would also cut idle keep-alives.
            .header_read_timeout(None);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(MAX_HEADER_LIST_BYTES)
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            // The WebSocket channel over HTTP/2 needs the extended CONNECT protocol.
            .enable_connect_protocol();
        let mut conn = pin!(builder.serve_connection_with_upgrades(io, service));
        let mut draining = false;
        loop {
            let (at, expiry) =
                watch.next_look(self.limits.header_timeout, self.limits.idle_timeout);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        debug!(peer = %self.peer.ip(), error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = self.shutdown.cancelled(), if !draining => {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = self.hard_stop.cancelled() => return,
                _ = tokio::time::sleep_until(at.into()) => {
                    // A look: close only if the deadline still holds now (a request may have
                    // begun, or ended and restarted the idle time, since it was computed).
                    let Some(why) = expiry else { continue };
                    let now_due = match why {
                        Expiry::Header => watch.head_overdue(self.limits.header_timeout),
                        Expiry::Idle => watch.idle_overdue(self.limits.idle_timeout),
                    };
                    if !now_due {
                        continue;
                    }
                    match why {
                        Expiry::Header => {
                            self.stats.closed_header_timeout.fetch_add(1, Ordering::Relaxed);
                            debug!(peer = %self.peer.ip(), "closed: request head not finished in time");
                        }
                        Expiry::Idle => {
                            self.stats.closed_idle.fetch_add(1, Ordering::Relaxed);
                            debug!(peer = %self.peer.ip(), "closed: idle");
                        }
                    }
                    // Nothing is in flight: no answer is lost by closing now.
                    return;
                }
            }
        }
    }
}
