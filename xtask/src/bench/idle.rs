//! The idle-scale runs of `cargo xtask bench`: a fresh proxy, N registrations each holding one
//! long poll or one WebSocket channel (the hidden task `bench-idle-clients`), and what that
//! costs it in memory and CPU.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::load::cpu_seconds;
use super::START;
use crate::procs::{self, listening_url, Proc};

/// What an idle proxy costs per registration.
pub(super) struct Idle {
    /// `"poll"` or `"channel"`: what each registration holds.
    pub(super) holding: &'static str,
    pub(super) registrations: usize,
    pub(super) rss_before: u64,
    pub(super) rss_after: u64,
    pub(super) cpu_per_sec: f64,
    pub(super) fd_limit: String,
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> Result<u64, String> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| "no VmRSS".into())
}

pub(super) fn idle_scale(n: usize, ws: bool) -> Result<Idle, String> {
    let holding = if ws { "channel" } else { "poll" };
    println!("idle scale: {n} registrations, each holding one {holding}...");
    let mut proxy = Proc::spawn_raised(
        "mcp-proxy (idle)",
        &procs::release_binary("mcp-proxy"),
        &[
            "--listen",
            "127.0.0.1",
            "--port",
            "0",
            "--max-poll-timeout",
            "600",
            // Every idle registration comes from this one loopback address: lift the
            // per-address caps (connections and registrations) above the run's size.
            "--max-connections-per-address",
            "0",
            "--max-connections",
            "0",
            "--max-registrations",
            "1000000",
            "--max-registrations-per-address",
            "1000000",
        ],
    )?;
    let url = proxy.wait_for_line(START, listening_url)?;
    // `sh -c "... exec"` replaces the shell, so the child pid is the proxy's own.
    let pid = proxy.pid();
    let rss_before = rss(pid)?;
    let xtask = std::env::current_exe().map_err(|e| e.to_string())?;
    let n_text = n.to_string();
    let mut args = vec!["bench-idle-clients", &url, &n_text];
    if ws {
        args.push("--ws");
    }
    let mut clients = Proc::spawn_raised("idle clients", &xtask, &args)?;
    procs::wait_registrations(&url, n as u64, Duration::from_secs(300))?;
    clients.wait_for_line(START, |l| l.contains("all held").then_some(()))?;
    let rss_after = rss(pid)?;
    let cpu0 = cpu_seconds(pid).ok_or("no CPU time in /proc")?;
    let window = Duration::from_secs(10);
    let t0 = Instant::now();
    std::thread::sleep(window); // the measurement window itself, not a synchronisation
    let cpu_per_sec =
        (cpu_seconds(pid).ok_or("no CPU time in /proc")? - cpu0) / t0.elapsed().as_secs_f64();
    let fd_limit = std::process::Command::new("sh")
        .args(["-c", "ulimit -Hn"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .unwrap_or_default()
        .trim()
        .to_owned();
    clients.kill();
    let _ = proxy.terminate(Duration::from_secs(10));
    Ok(Idle {
        holding,
        registrations: n,
        rss_before,
        rss_after,
        cpu_per_sec,
        fd_limit,
    })
}

/// The hidden task `bench-idle-clients URL N [--ws]`: N modern registrations, each holding one
/// long poll (or its channel, with credit for one item), until killed.
pub(crate) fn idle_clients(url: &str, n: usize, ws: bool) -> std::process::ExitCode {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(n + 16)
            .build()
            .expect("client");
        let held = Arc::new(AtomicU64::new(0));
        let gate = Arc::new(tokio::sync::Semaphore::new(256));
        for _ in 0..n {
            let (http, url, held, gate) =
                (http.clone(), url.to_owned(), held.clone(), gate.clone());
            tokio::spawn(async move {
                let permit = gate.acquire_owned().await.expect("semaphore");
                let body = json!({"type": "mcp_server", "name": "idle",
                    "capabilities": {"held_polls": 1}});
                let Ok(resp) = http
                    .post(format!("{url}/register"))
                    .json(&body)
                    .send()
                    .await
                else {
                    return;
                };
                let Ok(reg) = resp.json::<Value>().await else {
                    return;
                };
                let id = reg["session_id"].as_str().unwrap_or_default().to_owned();
                if ws {
                    hold_channel(&url, &id, permit, &held).await;
                    return;
                }
                drop(permit);
                held.fetch_add(1, Ordering::Relaxed);
                loop {
                    let poll = http
                        .get(format!("{url}/poll"))
                        .query(&[("session_id", id.as_str()), ("timeout", "600")])
                        .send()
                        .await;
                    if poll.is_err() {
                        return;
                    }
                }
            });
        }
        while held.load(Ordering::Relaxed) < n as u64 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("all held");
        std::future::pending::<()>().await;
    });
    std::process::ExitCode::SUCCESS
}

/// Opens registration `id`'s channel, grants it one item, and reads it (answering the proxy's
/// pings) until it closes.
async fn hold_channel(
    url: &str,
    id: &str,
    permit: tokio::sync::OwnedSemaphorePermit,
    held: &AtomicU64,
) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::ClientRequestBuilder;
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
    let Ok(uri) = format!("{}/channel", url.replacen("http", "ws", 1)).parse() else {
        return;
    };
    let request = ClientRequestBuilder::new(uri).with_header("mcp-reverse-session-id", id);
    // Small buffers: this process holds thousands of them.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let Ok((mut socket, _)) =
        tokio_tungstenite::connect_async_with_config(request, Some(config), true).await
    else {
        return;
    };
    let credit = r#"{"kind":"credit","items":1}"#;
    if socket.send(credit.into()).await.is_err() {
        return;
    }
    drop(permit);
    held.fetch_add(1, Ordering::Relaxed);
    while let Some(Ok(_)) = socket.next().await {}
}
