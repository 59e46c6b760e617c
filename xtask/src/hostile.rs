//! The hostile-traffic scenario of `cargo xtask e2e`: a proxy of its own (`--header-timeout 2
//! --idle-timeout 5`) with a reverse server behind it, honest clients calling `echo` over
//! `/message` and over a `/mcp` session, and, all at once, the attacks of [`attacks`]:
//! thousands of slow-header connections, multi-MiB registrations with unbounded-looking
//! fields, registrations and `/mcp` sessions until the per-address caps answer, DNS-rebinding
//! `Host` names and cross-site posts.
//!
//! Each attacker has its own loopback address (127.0.0.2 to .5; Linux routes all of
//! 127.0.0.0/8 to `lo`), the honest clients and the reverse server keep 127.0.0.1: what is
//! measured is that one address's abuse leaves everyone else served, which is what the
//! per-address caps promise. It holds when every slow connection the proxy accepted is
//! closed within the header timeout plus 1 s, the proxy's resident memory grows by at most
//! [`RSS_GROWTH_LIMIT`] from before the attack to after it, no honest call fails, and every
//! attack meets the status the proxy documents for it.

mod attacks;
mod raw;
mod report;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcp_client::{text_of, Client, ClientOptions};
use serde_json::json;

use crate::procs::{self, listening_url, Proc};
use attacks::{Abandoned, Target, UntilCap};
use raw::{Slow, Tally};

/// How long a process gets to start and say so.
const START: Duration = Duration::from_secs(30);
/// The proxy's `--header-timeout`.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// The proxy's `--idle-timeout`.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// An accepted slow connection must be closed within this (header timeout + 1 s).
const CLOSE_LIMIT: Duration = Duration::from_secs(3);
/// A slow connection closed sooner than this was refused at the door, not timed out.
const REFUSED_WITHIN: Duration = Duration::from_secs(1);
/// How long to wait on a slow connection before calling it still open.
const SLOW_WAIT: Duration = Duration::from_secs(8);
/// Slow-header connections to open (fewer if our open-file limit is low).
const SLOW_CONNECTIONS: usize = 2_000;
/// The proxy's default `--max-connections-per-address`.
const PER_ADDRESS_CONNECTIONS: usize = 512;
/// Measurement slack on the peak of accepted connections (a slot freed by the proxy is seen
/// closed by us a moment later).
const PEAK_SLACK: usize = 8;
/// The proxy's default `--max-registrations-per-address`.
const PER_ADDRESS_REGISTRATIONS: usize = 256;
/// The proxy's default `--max-sessions-per-caller`.
const PER_CALLER_SESSIONS: usize = 256;
/// Largest growth of the proxy's VmRSS from before the attack to after it.
const RSS_GROWTH_LIMIT: u64 = 32 << 20;
/// Honest calls before the attack starts (and the "before" memory is read).
const WARM_UP_CALLS: u64 = 50;
/// The whole attack phase must end within this.
const ATTACK_DEADLINE: Duration = Duration::from_secs(45);

const SLOW_FROM: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const REGISTER_FROM: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const BROWSER_FROM: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);
const SESSIONS_FROM: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);

/// The honest clients' tally.
#[derive(Debug, Default)]
struct Calls {
    made: u64,
    failed: u64,
    over_message: u64,
    over_mcp: u64,
    first_failures: Vec<String>,
}

impl Calls {
    fn record(&mut self, mcp: bool, outcome: Result<(), String>) {
        self.made += 1;
        if mcp {
            self.over_mcp += 1;
        } else {
            self.over_message += 1;
        }
        if let Err(e) = outcome {
            self.failed += 1;
            if self.first_failures.len() < 5 {
                let via = if mcp { "/mcp" } else { "/message" };
                self.first_failures.push(format!("{via}: {e}"));
            }
        }
    }
}

/// Everything the attack phase measured.
struct Figures {
    slow: Vec<Slow>,
    bloated: [Tally; 2],
    flood: UntilCap,
    rebinding: Tally,
    cross_site: [Tally; 3],
    sessions: Abandoned,
    took: Duration,
}

/// Runs the scenario on `rt`; `Err` names every check that failed (the figures are printed
/// either way).
pub(crate) fn run(rt: &tokio::runtime::Runtime) -> Result<(), String> {
    let slow_n = slow_connection_budget();
    let mut proxy = Proc::spawn_raised(
        "mcp-proxy (hostile)",
        &procs::binary("mcp-proxy"),
        &[
            "--listen",
            "127.0.0.1",
            "--port",
            "0",
            "--header-timeout",
            &HEADER_TIMEOUT.as_secs().to_string(),
            "--idle-timeout",
            &IDLE_TIMEOUT.as_secs().to_string(),
        ],
    )?;
    let url = proxy.wait_for_line(START, listening_url)?;
    let addr: SocketAddr = url
        .trim_start_matches("http://")
        .parse()
        .map_err(|e| format!("no address in {url}: {e}"))?;
    // `sh -c "... exec"` replaces the shell: the pid is the proxy's own.
    let pid = proxy.pid();
    let mut reverse = Proc::spawn(
        "reverse_server_example (hostile)",
        &procs::binary("examples/reverse_server_example"),
        &[&url],
    )?;
    procs::wait_registrations(&url, 1, START)?;
    let target = Target {
        addr,
        host: format!("127.0.0.1:{}", addr.port()),
    };
    let result = scenario(rt, &url, pid, &target, slow_n);
    reverse.terminate(Duration::from_secs(10));
    if let Some(line) = proxy.output().iter().find(|l| l.contains("panicked")) {
        return Err(format!("the proxy panicked: {line}"));
    }
    proxy.terminate(Duration::from_secs(10));
    result
}

fn scenario(
    rt: &tokio::runtime::Runtime,
    url: &str,
    pid: u32,
    target: &Target,
    slow_n: usize,
) -> Result<(), String> {
    rt.block_on(async {
        // Every attacker address must be usable before anything is judged.
        for src in [SLOW_FROM, REGISTER_FROM, BROWSER_FROM, SESSIONS_FROM] {
            raw::connect_from(src, target.addr).await?;
        }
        Ok::<_, String>(())
    })?;
    let calls: Arc<Mutex<Calls>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let honest = [false, true].map(|mcp| {
        let endpoint = if mcp {
            format!("{url}/mcp")
        } else {
            url.to_owned()
        };
        rt.spawn(honest_client(endpoint, mcp, calls.clone(), stop.clone()))
    });
    let made = || calls.lock().expect("calls lock").made;
    let warm = rt.block_on(wait_until(START, || made() >= WARM_UP_CALLS));
    let rss_before = rss(pid)?;
    let calls_before = made();
    let figures = warm.and_then(|()| {
        rt.block_on(async {
            tokio::time::timeout(ATTACK_DEADLINE, attack(target, slow_n))
                .await
                .map_err(|_| format!("the attacks did not end within {ATTACK_DEADLINE:?}"))
        })
    });
    let rss_after = rss(pid)?;
    let peak = status_kib(pid, "VmHWM:").map(|k| k * 1024).unwrap_or(0);
    let calls_during = made() - calls_before;
    stop.store(true, Ordering::Relaxed);
    for h in honest {
        let _ = rt.block_on(h);
    }
    let figures = figures?;
    let counters = rt.block_on(proxy_counters(url));
    let calls = calls.lock().expect("calls lock");
    let memory = Memory {
        before: rss_before,
        after: rss_after,
        peak,
    };
    report::report(&figures, &calls, calls_during, &memory, &counters, slow_n)
}

/// The proxy's VmRSS before and after the attack, and its peak.
struct Memory {
    before: u64,
    after: u64,
    peak: u64,
}

/// All attacks at once.
async fn attack(target: &Target, slow_n: usize) -> Figures {
    let epoch = Instant::now();
    let (slow, bloated, flood, rebinding, cross_site, sessions) = tokio::join!(
        attacks::slow_headers(target, SLOW_FROM, slow_n, epoch, SLOW_WAIT),
        attacks::bloated_registrations(target, REGISTER_FROM, 2),
        attacks::registration_flood(target, REGISTER_FROM, 2 * PER_ADDRESS_REGISTRATIONS + 100),
        attacks::rebinding(target, BROWSER_FROM, 10),
        attacks::cross_site(target, BROWSER_FROM, 10),
        attacks::abandoned_sessions(target, SESSIONS_FROM, 100, 2 * PER_CALLER_SESSIONS + 100),
    );
    Figures {
        slow,
        bloated,
        flood,
        rebinding,
        cross_site,
        sessions,
        took: epoch.elapsed(),
    }
}

/// Calls `echo` until `stop`, checking every answer for the exact text.
async fn honest_client(
    endpoint: String,
    mcp: bool,
    calls: Arc<Mutex<Calls>>,
    stop: Arc<AtomicBool>,
) {
    let options = ClientOptions {
        timeout: Duration::from_secs(15),
        ..ClientOptions::default()
    };
    let client = match Client::with_options(&endpoint, options) {
        Ok(c) => c,
        Err(e) => {
            return calls
                .lock()
                .expect("calls lock")
                .record(mcp, Err(e.to_string()))
        }
    };
    if mcp {
        if let Err(e) = client.initialize().await {
            return calls
                .lock()
                .expect("calls lock")
                .record(mcp, Err(format!("initialize: {e}")));
        }
    }
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let text = format!(
            "honest {} call {n}: «{}»",
            u8::from(mcp),
            "ok ".repeat((n % 7) as usize)
        );
        let outcome = match client.call_tool("echo", json!({"text": text})).await {
            Ok(r) if text_of(&r) == text => Ok(()),
            Ok(r) => Err(format!("asked {text:?}, got {:?}", text_of(&r))),
            Err(e) => Err(e.to_string()),
        };
        calls.lock().expect("calls lock").record(mcp, outcome);
    }
}

/// The proxy's connection counters from `/metrics`, as one line (informational).
async fn proxy_counters(url: &str) -> String {
    let text = match reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => match c.get(format!("{url}/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => return format!("unavailable ({e})"),
        },
        Err(e) => return format!("unavailable ({e})"),
    };
    let found: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("mcp_proxy_connections_"))
        .map(|l| l.trim_start_matches("mcp_proxy_connections_").to_owned())
        .collect();
    if found.is_empty() {
        "none in /metrics".to_owned()
    } else {
        found.join(", ")
    }
}

/// Polls `cond` until it holds, or fails after `deadline`.
async fn wait_until(deadline: Duration, cond: impl Fn() -> bool) -> Result<(), String> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > deadline {
            return Err(format!(
                "the honest clients made no {WARM_UP_CALLS} calls in {deadline:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// A `kB` field of `/proc/PID/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The resident memory of `pid`, in bytes.
fn rss(pid: u32) -> Result<u64, String> {
    status_kib(pid, "VmRSS:")
        .map(|k| k * 1024)
        .ok_or_else(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// Slow connections we can afford under our own open-file limit (a few hundred kept spare).
fn slow_connection_budget() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))?
                .split_whitespace()
                .nth(3)?
                .parse::<usize>()
                .ok()
        })
        .unwrap_or(usize::MAX);
    SLOW_CONNECTIONS.min(soft.saturating_sub(400))
}

/// `cargo xtask e2e --hostile`: this scenario alone.
pub(crate) fn run_alone() -> std::process::ExitCode {
    if let Err(e) = procs::build() {
        eprintln!("FAIL build: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut results = Vec::new();
    procs::timed(NAME, &mut results, || run(&rt));
    procs::summary(&results, "scenarios", None)
}

/// The scenario's name in the PASS/FAIL lines.
pub(crate) const NAME: &str =
    "hostile traffic: slow headers, floods, bloated and cross-site requests; honest calls unharmed";
