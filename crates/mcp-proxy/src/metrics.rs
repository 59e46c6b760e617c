//! Prometheus text at `/metrics`, and the middleware that measures every route.
//!
//! Counters and histograms live here, labelled by the route's *pattern* (`/servers/{name}/mcp`,
//! never the path a caller typed: the label set stays small and carries no pool a caller
//! invented). Gauges (registrations, pending requests, polls held) are read from the broker
//! at scrape time. Written by hand: the exposition format is a few lines of text, and the
//! whole registry is one mutex held for a map update per request.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::{Body, HttpBody};
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;

use crate::broker::Broker;
use crate::listener::ConnectionStats;

/// Upper bounds (seconds) of the latency histogram's buckets: from a fast tool call through
/// the proxy (~1 ms) to the default request timeout.
const BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }
}

#[derive(Debug, Default)]
struct Registry {
    /// (route, status) → latency until the response head.
    requests: BTreeMap<(String, u16), Histogram>,
    /// Error kind → count.
    errors: BTreeMap<&'static str, u64>,
    /// Route → bytes received and sent, counted as bodies flow (SSE streams included).
    bytes: HashMap<String, (Arc<AtomicU64>, Arc<AtomicU64>)>,
}

/// The proxy's counters and histograms.
#[derive(Debug, Default)]
pub struct Metrics {
    registry: Mutex<Registry>,
    /// The accept loop's counters (open connections, caps, timeouts).
    pub connections: Arc<ConnectionStats>,
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Metrics::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A plain mutex: map updates only, never an `.await` under it.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The accept loop's gauge and counters.
    fn render_connections(&self, out: &mut String) {
        let c = &self.connections;
        let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        gauge_head(
            out,
            "mcp_proxy_connections_open",
            "Open client and server connections.",
        );
        let _ = writeln!(out, "mcp_proxy_connections_open {}", n(&c.open));
        let _ = writeln!(
            out,
            "# HELP mcp_proxy_connections_accepted_total Connections admitted."
        );
        let _ = writeln!(out, "# TYPE mcp_proxy_connections_accepted_total counter");
        let _ = writeln!(
            out,
            "mcp_proxy_connections_accepted_total {}",
            n(&c.accepted)
        );
        let _ = writeln!(out, "# HELP mcp_proxy_connections_refused_total Connections closed unread at a cap (max_connections: total; max_connections_per_address: address).");
        let _ = writeln!(out, "# TYPE mcp_proxy_connections_refused_total counter");
        let _ = writeln!(
            out,
            "mcp_proxy_connections_refused_total{{cap=\"total\"}} {}",
            n(&c.refused_total_cap)
        );
        let _ = writeln!(
            out,
            "mcp_proxy_connections_refused_total{{cap=\"address\"}} {}",
            n(&c.refused_address_cap)
        );
        let _ = writeln!(out, "# HELP mcp_proxy_connections_closed_total Connections the proxy closed: a request head unfinished within header_timeout, idle past idle_timeout, or a failed TLS handshake.");
        let _ = writeln!(out, "# TYPE mcp_proxy_connections_closed_total counter");
        let _ = writeln!(
            out,
            "mcp_proxy_connections_closed_total{{reason=\"header_timeout\"}} {}",
            n(&c.closed_header_timeout)
        );
        let _ = writeln!(
            out,
            "mcp_proxy_connections_closed_total{{reason=\"idle\"}} {}",
            n(&c.closed_idle)
        );
        let _ = writeln!(
            out,
            "mcp_proxy_connections_closed_total{{reason=\"tls_handshake\"}} {}",
            n(&c.tls_failed)
        );
    }

    fn byte_counters(&self, route: &str) -> (Arc<AtomicU64>, Arc<AtomicU64>) {
        let mut reg = self.lock();
        // Looked up before inserting: a route's name is allocated once, not per request.
        if let Some((i, o)) = reg.bytes.get(route) {
            return (i.clone(), o.clone());
        }
        let (i, o) = reg.bytes.entry(route.to_owned()).or_default();
        (i.clone(), o.clone())
    }

    fn record(&self, route: &str, status: StatusCode, secs: f64) {
        let mut reg = self.lock();
        reg.requests
            .entry((route.to_owned(), status.as_u16()))
            .or_default()
            .observe(secs);
        if let Some(kind) = error_kind(status) {
            *reg.errors.entry(kind).or_default() += 1;
        }
    }

    /// The Prometheus text exposition of everything, with the broker's gauges.
    pub fn render(&self, broker: &Broker) -> String {
        let mut out = String::new();
        let pools = broker.servers();
        let stats = broker.stats();
        let polls: usize = pools
            .iter()
            .flat_map(|p| &p.members)
            .map(|m| m.polls_open)
            .sum();
        gauge_head(
            &mut out,
            "mcp_proxy_registrations",
            "Live registrations, by pool (\"\" is the default pool).",
        );
        for p in &pools {
            let _ = writeln!(
                out,
                "mcp_proxy_registrations{{pool=\"{}\"}} {}",
                p.name.as_deref().unwrap_or(""),
                p.members.len()
            );
        }
        gauge_head(
            &mut out,
            "mcp_proxy_pending_requests",
            "Requests and notifications waiting for a server's answer.",
        );
        let _ = writeln!(out, "mcp_proxy_pending_requests {}", stats.pending);
        gauge_head(
            &mut out,
            "mcp_proxy_polls_held",
            "Polls held open by reverse clients.",
        );
        let _ = writeln!(out, "mcp_proxy_polls_held {polls}");
        let channels = pools
            .iter()
            .flat_map(|p| &p.members)
            .filter(|m| m.delivery == "channel")
            .count();
        gauge_head(
            &mut out,
            "mcp_proxy_channels_open",
            "Reverse channels (WebSockets) open; each also counts as a poll held.",
        );
        let _ = writeln!(out, "mcp_proxy_channels_open {channels}");
        gauge_head(
            &mut out,
            "mcp_proxy_client_sessions",
            "Client sessions of /mcp.",
        );
        let _ = writeln!(out, "mcp_proxy_client_sessions {}", stats.sessions);
        gauge_head(
            &mut out,
            "mcp_proxy_sse_streams",
            "SSE connections attached to streams.",
        );
        let _ = writeln!(out, "mcp_proxy_sse_streams {}", stats.attached);
        self.render_connections(&mut out);
        let reg = self.lock();
        let _ = writeln!(out, "# HELP mcp_proxy_request_duration_seconds Time from a request's arrival to its response head, by route pattern and status.");
        let _ = writeln!(out, "# TYPE mcp_proxy_request_duration_seconds histogram");
        for ((route, status), h) in &reg.requests {
            let labels = format!("route=\"{route}\",status=\"{status}\"");
            for (bound, count) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    out,
                    "mcp_proxy_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "mcp_proxy_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "mcp_proxy_request_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "mcp_proxy_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
        let _ = writeln!(out, "# HELP mcp_proxy_errors_total Error answers, by kind.");
        let _ = writeln!(out, "# TYPE mcp_proxy_errors_total counter");
        for (kind, n) in &reg.errors {
            let _ = writeln!(out, "mcp_proxy_errors_total{{kind=\"{kind}\"}} {n}");
        }
        let mut bytes: Vec<_> = reg.bytes.iter().collect();
        bytes.sort_by(|a, b| a.0.cmp(b.0));
        for (name, help, pick) in [
            (
                "mcp_proxy_bytes_in_total",
                "Body bytes received, by route pattern.",
                0,
            ),
            (
                "mcp_proxy_bytes_out_total",
                "Body bytes sent, by route pattern.",
                1,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for (route, (i, o)) in &bytes {
                let n = if pick == 0 { i } else { o }.load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}{{route=\"{route}\"}} {n}");
            }
        }
        out
    }
}

fn gauge_head(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
}

/// The `kind` label of an error answer.
fn error_kind(status: StatusCode) -> Option<&'static str> {
    Some(match status.as_u16() {
        0..=399 => return None,
        400 => "invalid_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "unknown_session",
        406 => "not_acceptable",
        413 => "payload_too_large",
        429 => "rate_limited",
        502 => "server_gone",
        503 => "unavailable",
        504 => "timeout",
        _ => "other",
    })
}

/// Middleware: latency by route and status, errors by kind, bytes in and out.
pub(crate) async fn measure(
    State(metrics): State<Arc<Metrics>>,
    req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_owned();
    let (bytes_in, bytes_out) = metrics.byte_counters(&route);
    let req = req.map(|body| counted(body, bytes_in));
    let resp = next.run(req).await;
    metrics.record(&route, resp.status(), start.elapsed().as_secs_f64());
    resp.map(|body| counted(body, bytes_out))
}

/// Counts a body's bytes into `counter`: at once when its size is known (the body is left as
/// it is, so `Content-Length` is kept: the seed's client needs it), else as it streams.
fn counted(body: Body, counter: Arc<AtomicU64>) -> Body {
    if let Some(n) = body.size_hint().exact() {
        counter.fetch_add(n, Ordering::Relaxed);
        return body;
    }
    Body::from_stream(body.into_data_stream().inspect(move |chunk| {
        if let Ok(c) = chunk {
            counter.fetch_add(c.len() as u64, Ordering::Relaxed);
        }
    }))
}
