//! The load generator of `cargo xtask bench`: plain HTTP (no client library in the way) to one
//! path's echo tool, latency percentiles from sequential calls, throughput from concurrent
//! workers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_protocol::streamable::SESSION_ID_HEADER;
use serde_json::{json, Value};

/// Which transport a path speaks.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// The seed's `POST /message`: one JSON body each way.
    Message,
    /// Streamable HTTP `/mcp`: a session from `initialize`, JSON answers.
    Mcp,
}

/// One way to reach the echo tool.
pub(super) struct Path_ {
    pub(super) name: String,
    /// Network legs a call crosses, request and answer together.
    pub(super) hops: u32,
    pub(super) kind: Kind,
    pub(super) url: String,
    /// The proxy's and the reverse client's process ids, for CPU per call (proxy paths only).
    pub(super) cpu_of: Option<(u32, u32)>,
}

/// CPU seconds (user and system) a process has used so far, from `/proc/PID/stat`.
pub(super) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces, are counted from its `)`.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

/// Clock ticks per second of `/proc` times (`getconf CLK_TCK`; 100 if it cannot tell).
fn clock_ticks() -> f64 {
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .unwrap_or(100.0)
    })
}

/// Calls the echo tool over one path.
pub(super) struct Caller {
    http: reqwest::Client,
    pub(super) url: String,
    pub(super) kind: Kind,
    session: Option<String>,
    next_id: AtomicU64,
}

impl Caller {
    pub(super) async fn connect(path: &Path_) -> Result<Caller, String> {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(256)
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| e.to_string())?;
        let mut caller = Caller {
            http,
            url: path.url.clone(),
            kind: path.kind,
            session: None,
            next_id: AtomicU64::new(1),
        };
        if path.kind == Kind::Mcp {
            let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "xtask-bench", "version": "1"}}});
            let resp = caller.post(&init).await?;
            caller.session = resp
                .headers()
                .get(SESSION_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let _ = resp.bytes().await;
            let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
            let _ = caller.post(&done).await?.bytes().await;
        }
        Ok(caller)
    }

    async fn post(&self, body: &Value) -> Result<reqwest::Response, String> {
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(body).expect("JSON"));
        if self.kind == Kind::Mcp {
            req = req
                .header("accept", "application/json, text/event-stream")
                .header("mcp-protocol-version", "2025-11-25");
            if let Some(s) = &self.session {
                req = req.header(SESSION_ID_HEADER, s);
            }
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        Ok(resp)
    }

    /// One echo call; checks the answer carries the whole text back.
    async fn echo(&self, text: &str) -> Result<(), String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": text}}});
        let resp = self.post(&body).await?;
        let sse = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/event-stream"));
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        let answer: Value = if sse {
            let text = String::from_utf8_lossy(&bytes);
            text.lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                .find(|v| v.get("id") == Some(&json!(id)))
                .ok_or("no answer in the SSE stream")?
        } else {
            serde_json::from_slice(&bytes).map_err(|e| e.to_string())?
        };
        let echoed = answer["result"]["content"][0]["text"]
            .as_str()
            .map(str::len);
        if echoed == Some(text.len()) {
            Ok(())
        } else {
            Err(format!(
                "bad answer: {}",
                &answer.to_string()[..answer.to_string().len().min(200)]
            ))
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy)]
pub(super) struct Latency {
    pub(super) p50: f64,
    pub(super) p90: f64,
    pub(super) p99: f64,
}

fn percentiles(mut samples: Vec<Duration>) -> Latency {
    samples.sort();
    let at = |p: f64| {
        let i = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    Latency {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
    }
}

pub(super) async fn measure_latency(
    caller: &Caller,
    text: &str,
    calls: usize,
) -> Result<Latency, String> {
    for _ in 0..calls / 10 + 3 {
        caller.echo(text).await?; // warm-up: connections, allocators
    }
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        caller.echo(text).await?;
        samples.push(start.elapsed());
    }
    Ok(percentiles(samples))
}

pub(super) async fn measure_throughput(
    caller: Arc<Caller>,
    text: Arc<String>,
    concurrency: usize,
    window: Duration,
) -> Result<(f64, u64), String> {
    let deadline = Instant::now() + window;
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let caller = caller.clone();
            let text = text.clone();
            tokio::spawn(async move {
                let mut done = 0u64;
                while Instant::now() < deadline {
                    caller.echo(&text).await?;
                    done += 1;
                }
                Ok::<_, String>(done)
            })
        })
        .collect();
    let mut total = 0;
    for w in workers {
        total += w.await.map_err(|e| e.to_string())??;
    }
    Ok((total as f64 / start.elapsed().as_secs_f64(), total))
}
