//! The attacks of the hostile scenario, each from its own loopback address, each returning
//! what it saw. None of them judges: `hostile.rs` checks the figures.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::raw::{self, Answer, Slow, Tally};

/// The proxy under attack.
#[derive(Clone, Debug)]
pub(super) struct Target {
    /// Where it listens.
    pub(super) addr: SocketAddr,
    /// `127.0.0.1:PORT`, the honest `Host`.
    pub(super) host: String,
}

impl Target {
    async fn post(
        &self,
        src: Ipv4Addr,
        path: &str,
        host: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        read_body: bool,
    ) -> Result<Answer, String> {
        let req = raw::request("POST", path, host, headers, body);
        raw::exchange(src, self.addr, &req, read_body).await
    }
}

/// `initialize` as a Streamable HTTP client sends it.
const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"hostile","version":"0"}}}"#;
/// A tool call a hostile web page would like to make.
const TOOL_CALL: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"cross-site"}}}"#;
/// The headers of a Streamable HTTP POST.
const MCP_HEADERS: [(&str, &str); 2] = [
    ("Content-Type", "application/json"),
    ("Accept", "application/json, text/event-stream"),
];

/// Opens `n` slow-header connections from `src` as fast as loopback allows (at most
/// `parallel` connecting at once), then waits on all of them until the proxy closes each, or
/// `wait` has passed since its head started.
pub(super) async fn slow_headers(
    target: &Target,
    src: Ipv4Addr,
    n: usize,
    epoch: Instant,
    wait: Duration,
) -> Vec<Slow> {
    let gate = Arc::new(Semaphore::new(64));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (gate, addr) = (gate.clone(), target.addr);
            tokio::spawn(async move {
                let permit = gate.acquire_owned().await.expect("semaphore never closed");
                let Ok(stream) = raw::connect_from(src, addr).await else {
                    return Slow::Failed;
                };
                drop(permit);
                raw::slow_head(stream, epoch, wait).await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap_or(Slow::Failed));
    }
    out
}

/// Entries in a bloated `protocol_versions` list.
const BLOATED_VERSIONS: usize = 700_000;
/// Bytes in a bloated pool name.
const BLOATED_NAME: usize = 3 << 20;

/// Registrations of a few MiB whose fields are far over any sane bound: a 700,000-entry
/// `protocol_versions` (2.8 MB), a 3 MiB `name` on a modern and on a legacy body. Sent
/// `rounds` times, all of a round at once. Returns the outcomes of the long lists, then of
/// the long names.
pub(super) async fn bloated_registrations(
    target: &Target,
    src: Ipv4Addr,
    rounds: usize,
) -> [Tally; 2] {
    let mut versions = String::with_capacity(BLOATED_VERSIONS * 4 + 200);
    versions.push_str(
        r#"{"type":"mcp_server","name":"bloat","capabilities":{"client_sessions":true,"held_polls":1,"protocol_versions":["#,
    );
    for i in 0..BLOATED_VERSIONS {
        versions.push_str(if i == 0 { r#""x""# } else { r#","x""# });
    }
    versions.push_str("]}}");
    let name = "a".repeat(BLOATED_NAME);
    let long_modern = format!(
        r#"{{"type":"mcp_server","name":"{name}","capabilities":{{"client_sessions":true,"protocol_versions":["2025-11-25"]}}}}"#
    );
    let long_legacy = format!(r#"{{"type":"mcp_server","name":"{name}"}}"#);
    let bodies: Arc<[String; 3]> = Arc::new([versions, long_modern, long_legacy]);
    let mut tally: [Tally; 2] = Default::default();
    for _ in 0..rounds {
        let tasks: Vec<_> = [0usize, 0, 1, 2]
            .into_iter()
            .map(|which| {
                let (target, bodies) = (target.clone(), bodies.clone());
                tokio::spawn(async move {
                    let headers = [("Content-Type", "application/json")];
                    let body = bodies[which].as_bytes();
                    let outcome = target
                        .post(src, "/register", &target.host, &headers, body, true)
                        .await;
                    (usize::from(which > 0), outcome)
                })
            })
            .collect();
        for t in tasks {
            match t.await {
                Ok((kind, outcome)) => tally[kind].add(&outcome),
                Err(e) => tally[0].add(&Err(e.to_string())),
            }
        }
    }
    tally
}

/// What a loop of requests met until a cap answered.
#[derive(Debug, Default)]
pub(super) struct UntilCap {
    /// Every outcome.
    pub(super) tally: Tally,
    /// 200s before the cap answered.
    pub(super) accepted: usize,
    /// The status that ended the loop (429 or 503), if one did.
    pub(super) cap: Option<u16>,
    /// The cap's body, for the report.
    pub(super) cap_body: String,
}

/// Registers small modern servers (pool `flood`, no token) until the proxy answers 429, at
/// most `max` times.
pub(super) async fn registration_flood(target: &Target, src: Ipv4Addr, max: usize) -> UntilCap {
    let body = br#"{"type":"mcp_server","name":"flood","capabilities":{"client_sessions":true,"held_polls":0,"protocol_versions":["2025-11-25"]}}"#;
    until_cap(max, &[429], || {
        target.post(
            src,
            "/register",
            &target.host,
            &[("Content-Type", "application/json")],
            body,
            true,
        )
    })
    .await
}

async fn until_cap<F, Fut>(max: usize, caps: &[u16], mut attempt: F) -> UntilCap
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Answer, String>>,
{
    let mut out = UntilCap::default();
    for _ in 0..max {
        let outcome = attempt().await;
        out.tally.add(&outcome);
        match outcome {
            Ok(a) if a.status == 200 => out.accepted += 1,
            Ok(a) if caps.contains(&a.status) => {
                out.cap = Some(a.status);
                out.cap_body = a.body;
                break;
            }
            _ => {}
        }
    }
    out
}

/// DNS-rebinding names in `Host` (with a matching `Origin`) on `/mcp`: two spellings that a
/// prefix test would take for loopback, `rounds` times each.
pub(super) async fn rebinding(target: &Target, src: Ipv4Addr, rounds: usize) -> Tally {
    let port = target.addr.port();
    let mut tally = Tally::default();
    for name in ["127.attacker.example", "127.0.0.1.attacker.example"] {
        let host = format!("{name}:{port}");
        let origin = format!("http://{host}");
        let mut headers = MCP_HEADERS.to_vec();
        headers.push(("Origin", &origin));
        for _ in 0..rounds {
            let outcome = target
                .post(src, "/mcp", &host, &headers, INITIALIZE.as_bytes(), true)
                .await;
            tally.add(&outcome);
        }
    }
    tally
}

/// Cross-site posts to `/message`, `rounds` of each: a foreign `Origin` with `text/plain` (a
/// "simple" request a page may send without preflight), a foreign `Origin` with JSON, and
/// `text/plain` with no `Origin`.
pub(super) async fn cross_site(target: &Target, src: Ipv4Addr, rounds: usize) -> [Tally; 3] {
    let evil = ("Origin", "http://evil.example");
    let kinds: [Vec<(&str, &str)>; 3] = [
        vec![evil, ("Content-Type", "text/plain")],
        vec![evil, ("Content-Type", "application/json")],
        vec![("Content-Type", "text/plain")],
    ];
    let mut out: [Tally; 3] = Default::default();
    for (kind, headers) in kinds.iter().enumerate() {
        for _ in 0..rounds {
            let outcome = target
                .post(
                    src,
                    "/message",
                    &target.host,
                    headers,
                    TOOL_CALL.as_bytes(),
                    true,
                )
                .await;
            out[kind].add(&outcome);
        }
    }
    out
}

/// What the abandoned-session attack saw.
#[derive(Debug, Default)]
pub(super) struct Abandoned {
    /// `initialize` requests whose connection was closed right after the request was sent.
    pub(super) hung_up_before: usize,
    /// `initialize` requests whose connection was closed once the answer's head was in.
    pub(super) hung_up_after: Tally,
    /// Then `initialize` (answers read) until a cap.
    pub(super) until_cap: UntilCap,
}

/// `initialize` on `/mcp` from clients that hang up (`hang_ups` before the answer, as many
/// after its head, never a DELETE), then more until the per-caller cap answers 429 or 503, at
/// most `max` times.
pub(super) async fn abandoned_sessions(
    target: &Target,
    src: Ipv4Addr,
    hang_ups: usize,
    max: usize,
) -> Abandoned {
    let mut out = Abandoned::default();
    let req = raw::request(
        "POST",
        "/mcp",
        &target.host,
        &MCP_HEADERS,
        INITIALIZE.as_bytes(),
    );
    for _ in 0..hang_ups {
        if let Ok(mut stream) = raw::connect_from(src, target.addr).await {
            use tokio::io::AsyncWriteExt;
            if stream.write_all(&req).await.is_ok() {
                out.hung_up_before += 1;
            }
            drop(stream);
        }
        // Head only, then the connection is dropped.
        let outcome = raw::exchange(src, target.addr, &req, false).await;
        out.hung_up_after.add(&outcome);
    }
    out.until_cap = until_cap(max, &[429, 503], || {
        raw::exchange(src, target.addr, &req, true)
    })
    .await;
    out
}
