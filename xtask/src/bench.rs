//! `cargo xtask bench`: what the proxy costs against calling the server directly and against
//! generic TCP tunnels, measured in one run on loopback with release builds.
//!
//! Every path serves the same `echo` tool of the same server code; the load generator runs in
//! this process and speaks plain HTTP (no client library in the way), so the rows differ only
//! by the path a call takes.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::infra::{self, TempDir};
use crate::procs::{self, listening_url, Proc};

mod idle;

pub(crate) use idle::idle_clients;
use idle::{idle_scale, Idle};

/// How long a process gets to start.
const START: Duration = Duration::from_secs(60);
/// Payload sizes of the echo text.
const PAYLOADS: &[(usize, &str)] = &[
    (1024, "1 KiB"),
    (64 * 1024, "64 KiB"),
    (1024 * 1024, "1 MiB"),
];
/// Concurrency levels of the throughput runs.
const CONCURRENCY: &[usize] = &[1, 16, 64];

struct Options {
    quick: bool,
    idle: usize,
    compare: Option<String>,
    install_tunnels: bool,
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        quick: false,
        idle: 10_000,
        compare: None,
        install_tunnels: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--install-tunnels" => o.install_tunnels = true,
            "--idle" => {
                o.idle = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--idle needs a number of registrations (0 skips)")?
            }
            "--compare" => {
                o.compare = Some(it.next().ok_or("--compare needs a JSON file")?.clone())
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    Ok(o)
}

const USAGE: &str = "\
Usage: cargo xtask bench [--quick] [--idle N] [--compare OLD.json] [--install-tunnels]

  --quick             shorter runs (a smoke test of the harness, noisy figures)
  --idle N            registrations for the idle-scale run (default 10000; 0 skips it)
  --compare OLD.json  print the change against an earlier target/bench/latest.json
  --install-tunnels   cargo install rathole and bore-cli first, for the tunnel rows";

/// Which transport a path speaks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The seed's `POST /message`: one JSON body each way.
    Message,
    /// Streamable HTTP `/mcp`: a session from `initialize`, JSON answers.
    Mcp,
}

/// One way to reach the echo tool.
struct Path_ {
    name: String,
    /// Network legs a call crosses, request and answer together.
    hops: u32,
    kind: Kind,
    url: String,
}

/// Calls the echo tool over one path.
struct Caller {
    http: reqwest::Client,
    url: String,
    kind: Kind,
    session: Option<String>,
    next_id: AtomicU64,
}

impl Caller {
    async fn connect(path: &Path_) -> Result<Caller, String> {
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
                .get("mcp-session-id")
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
                req = req.header("mcp-session-id", s);
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
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
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

async fn measure_latency(caller: &Caller, text: &str, calls: usize) -> Result<Latency, String> {
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

async fn measure_throughput(
    caller: Arc<Caller>,
    text: Arc<String>,
    concurrency: usize,
    window: Duration,
) -> Result<f64, String> {
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
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// One measured row.
struct Row {
    path: String,
    hops: u32,
    payload: &'static str,
    latency: Latency,
    rps: Vec<(usize, f64)>,
}

pub(crate) fn run(args: &[String]) -> std::process::ExitCode {
    let options = match parse_args(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    // The load generator is part of every measurement: an unoptimized one (serde_json and
    // hyper at opt-level 0) would cost more than the paths it measures. `cargo xtask` builds
    // in debug, so hand over to an optimized build of this same program.
    if cfg!(debug_assertions) {
        return match procs::cargo_build(&["--release", "-p", "xtask"]) {
            Ok(()) => {
                let status = std::process::Command::new(procs::release_binary("xtask"))
                    .arg("bench")
                    .args(args)
                    .status();
                match status {
                    Ok(s) if s.success() => std::process::ExitCode::SUCCESS,
                    Ok(_) => std::process::ExitCode::FAILURE,
                    Err(e) => {
                        eprintln!("bench failed: cannot run the release xtask: {e}");
                        std::process::ExitCode::FAILURE
                    }
                }
            }
            Err(e) => {
                eprintln!("bench failed: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    match bench(&options) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Spawns `program` with the open-file limit raised to the hard limit (idle scale needs one
/// descriptor per held poll).
fn spawn_unlimited(name: &str, program: &Path, args: &[&str]) -> Result<Proc, String> {
    let mut sh_args = vec![
        "-c",
        "ulimit -n \"$(ulimit -Hn)\" 2>/dev/null; exec \"$0\" \"$@\"",
    ];
    let program = program.to_str().ok_or("non-UTF-8 path")?;
    sh_args.push(program);
    sh_args.extend_from_slice(args);
    Proc::spawn(name, Path::new("/bin/sh"), &sh_args)
}

fn bench(options: &Options) -> Result<(), String> {
    if options.install_tunnels {
        // rathole 0.5's own lockfile pins a `time` that no longer builds on current Rust, and
        // its default TLS feature wants OpenSSL: take fresh dependencies and plain TCP only.
        let installs: [(&str, &[&str]); 2] = [
            (
                "rathole",
                &[
                    "rathole",
                    "--no-default-features",
                    "--features",
                    "server,client",
                ],
            ),
            ("bore-cli", &["--locked", "bore-cli"]),
        ];
        for (krate, args) in installs {
            println!("installing {krate} (cargo install)...");
            let ok = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
                .arg("install")
                .args(args)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                println!("  could not install {krate}; its row will be skipped");
            }
        }
    }
    procs::cargo_build(&[
        "--release",
        "-p",
        "mcp-proxy",
        "--bin",
        "mcp-proxy",
        "-p",
        "mcp-reverse",
        "--example",
        "reverse_server_example",
        "-p",
        "mcp-server",
        "--example",
        "direct_server",
    ])?;
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;

    // The direct server, and the same tools behind the proxy.
    let mut direct = Proc::spawn(
        "direct_server",
        &procs::release_binary("examples/direct_server"),
        &["0"],
    )?;
    let direct_url = direct.wait_for_line(START, listening_url)?;
    let mut proxy = spawn_unlimited(
        "mcp-proxy",
        &procs::release_binary("mcp-proxy"),
        // The bench measures the path, not the rate limiter: its per-caller default (1000/s)
        // would turn the load generator's calls into 429s.
        &[
            "--listen",
            "127.0.0.1",
            "--port",
            "0",
            "--rate-limit",
            "0",
            "--server-rate-limit",
            "0",
        ],
    )?;
    let proxy_url = proxy.wait_for_line(START, listening_url)?;
    let _reverse = Proc::spawn(
        "reverse_server_example",
        &procs::release_binary("examples/reverse_server_example"),
        &[&proxy_url],
    )?;
    procs::wait_registrations(&proxy_url, 1, START)?;

    let mut paths = vec![
        Path_ {
            name: "direct /mcp".into(),
            hops: 2,
            kind: Kind::Mcp,
            url: format!("{direct_url}/mcp"),
        },
        Path_ {
            name: "proxy /message".into(),
            hops: 4,
            kind: Kind::Message,
            url: format!("{proxy_url}/message"),
        },
        Path_ {
            name: "proxy /mcp".into(),
            hops: 4,
            kind: Kind::Mcp,
            url: format!("{proxy_url}/mcp"),
        },
    ];
    let _tunnels = start_tunnels(&direct_url, &mut paths);
    let _cluster = match start_cluster(&mut paths) {
        Ok(cluster) => Some(cluster),
        Err(e) => {
            println!("skipped the cluster rows: {e}");
            None
        }
    };

    let quick = options.quick;
    let calls_for = |size: usize| match (quick, size) {
        (true, s) if s > 100_000 => 5,
        (true, _) => 20,
        (false, s) if s > 100_000 => 40,
        (false, s) if s > 10_000 => 150,
        (false, _) => 300,
    };
    let window = if quick {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(2)
    };

    let mut rows = Vec::new();
    for path in &paths {
        let caller = match rt.block_on(Caller::connect(path)) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                println!("skipped {}: {e}", path.name);
                continue;
            }
        };
        for &(size, label) in PAYLOADS {
            let text = Arc::new("x".repeat(size));
            let latency = rt
                .block_on(measure_latency(&caller, &text, calls_for(size)))
                .map_err(|e| format!("{} {label}: {e}", path.name))?;
            let mut rps = Vec::new();
            for &c in CONCURRENCY {
                let r = rt
                    .block_on(measure_throughput(caller.clone(), text.clone(), c, window))
                    .map_err(|e| format!("{} {label} x{c}: {e}", path.name))?;
                rps.push((c, r));
            }
            println!(
                "  measured {:<16} {label:>6}: p50 {:.3} ms, {:.0} calls/s at 16",
                path.name, latency.p50, rps[1].1
            );
            rows.push(Row {
                path: path.name.clone(),
                hops: path.hops,
                payload: label,
                latency,
                rps,
            });
        }
    }
    let _ = proxy.terminate(Duration::from_secs(10));
    let _ = direct.terminate(Duration::from_secs(10));

    let idle = if options.idle > 0 {
        Some(idle_scale(options.idle)?)
    } else {
        None
    };

    print_table(&rows, idle.as_ref());
    let report = to_json(&rows, idle.as_ref(), options);
    let out_dir = procs::target_dir().join("bench");
    std::fs::create_dir_all(&out_dir).map_err(|e| e.to_string())?;
    let out = out_dir.join("latest.json");
    std::fs::write(&out, serde_json::to_string_pretty(&report).expect("JSON"))
        .map_err(|e| e.to_string())?;
    println!(
        "\nwrote {} ({:.0} s of measuring)",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    if let Some(old) = &options.compare {
        compare(old, &report)?;
    }
    Ok(())
}

/// Two proxy instances sharing a `redis-server` (`--broker`), the same reverse server
/// registered through A, so A is its pool's home: a call to A is served at home (what the
/// cluster costs when the balancer happens to pick the home), a call to B is relayed to A over
/// Redis pub/sub and its answer relayed back (the cost of reaching any other instance).
/// Dropping what it returns stops them all, the directory last.
fn start_cluster(paths: &mut Vec<Path_>) -> Result<(Vec<Proc>, TempDir), String> {
    let tools = infra::tools()?;
    let dir = TempDir::new("bench-cluster")?;
    let (redis, port) = infra::start_redis(&tools, dir.path())?;
    let broker = format!("redis://127.0.0.1:{port}");
    let mut proxies = Vec::new();
    let mut urls = Vec::new();
    for name in ["mcp-proxy A", "mcp-proxy B"] {
        let mut proxy = spawn_unlimited(
            name,
            &procs::release_binary("mcp-proxy"),
            &[
                "--listen",
                "127.0.0.1",
                "--port",
                "0",
                "--rate-limit",
                "0",
                "--server-rate-limit",
                "0",
                "--broker",
                &broker,
            ],
        )?;
        urls.push(proxy.wait_for_line(START, listening_url)?);
        proxies.push(proxy);
    }
    let (home, other) = (urls[0].clone(), urls[1].clone());
    let reverse = Proc::spawn(
        "reverse_server_example (cluster)",
        &procs::release_binary("examples/reverse_server_example"),
        &[&home],
    )?;
    procs::wait_registrations(&home, 1, START)?;
    paths.push(Path_ {
        name: "cluster /message, at home".into(),
        hops: 4,
        kind: Kind::Message,
        url: format!("{home}/message"),
    });
    paths.push(Path_ {
        name: "cluster /message, relayed".into(),
        hops: 8,
        kind: Kind::Message,
        url: format!("{other}/message"),
    });
    paths.push(Path_ {
        name: "cluster /mcp, relayed".into(),
        hops: 8,
        kind: Kind::Mcp,
        url: format!("{other}/mcp"),
    });
    // Dropped in order: the reverse server first (no storm of reconnects), Redis last.
    let mut procs = vec![reverse];
    procs.extend(proxies);
    procs.push(redis);
    Ok((procs, dir))
}

/// Starts the TCP tunnels that are installed in front of the direct server; each adds a path.
fn start_tunnels(direct_url: &str, paths: &mut Vec<Path_>) -> Vec<Proc> {
    let mut procs = Vec::new();
    let direct_addr = direct_url.trim_start_matches("http://").to_owned();
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
    };
    if which("rathole") {
        let result = (|| -> Result<(Proc, Proc, u16), String> {
            let (ctrl, public) = (
                free_port().map_err(|e| e.to_string())?,
                free_port().map_err(|e| e.to_string())?,
            );
            let dir = procs::target_dir().join("bench");
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let server = dir.join("rathole-server.toml");
            let client = dir.join("rathole-client.toml");
            std::fs::write(&server, format!(
                "[server]\nbind_addr = \"127.0.0.1:{ctrl}\"\n[server.services.mcp]\ntoken = \"bench\"\nbind_addr = \"127.0.0.1:{public}\"\n"
            )).map_err(|e| e.to_string())?;
            std::fs::write(&client, format!(
                "[client]\nremote_addr = \"127.0.0.1:{ctrl}\"\n[client.services.mcp]\ntoken = \"bench\"\nlocal_addr = \"{direct_addr}\"\n"
            )).map_err(|e| e.to_string())?;
            let s = Proc::spawn(
                "rathole server",
                Path::new("rathole"),
                &["--server", server.to_str().unwrap()],
            )?;
            let c = Proc::spawn(
                "rathole client",
                Path::new("rathole"),
                &["--client", client.to_str().unwrap()],
            )?;
            Ok((s, c, public))
        })();
        match result {
            Ok((s, c, public)) => {
                procs.push(s);
                procs.push(c);
                paths.push(Path_ {
                    name: "rathole -> direct".into(),
                    hops: 6,
                    kind: Kind::Mcp,
                    url: format!("http://127.0.0.1:{public}/mcp"),
                });
            }
            Err(e) => println!("skipped rathole: {e}"),
        }
    } else {
        println!("skipped rathole: not installed (--install-tunnels installs it)");
    }
    if which("bore") {
        let port = direct_addr.rsplit(':').next().unwrap_or("0").to_owned();
        let result = (|| -> Result<(Proc, Proc, String), String> {
            let s = Proc::spawn(
                "bore server",
                Path::new("bore"),
                &["server", "--bind-addr", "127.0.0.1"],
            )?;
            let mut c = Proc::spawn(
                "bore local",
                Path::new("bore"),
                &["local", &port, "--to", "127.0.0.1"],
            )?;
            // `bore local` logs `listening at 127.0.0.1:PORT` (with colour codes around it).
            let public = c.wait_for_line(START, |l| {
                let rest = &l[l.find("listening at ")? + "listening at ".len()..];
                let addr: String = rest
                    .chars()
                    .take_while(|ch| ch.is_ascii_digit() || *ch == '.' || *ch == ':')
                    .collect();
                addr.contains(':').then_some(addr)
            })?;
            Ok((s, c, public))
        })();
        match result {
            Ok((s, c, public)) => {
                procs.push(s);
                procs.push(c);
                paths.push(Path_ {
                    name: "bore -> direct".into(),
                    hops: 6,
                    kind: Kind::Mcp,
                    url: format!("http://{public}/mcp"),
                });
            }
            Err(e) => println!("skipped bore: {e}"),
        }
    } else {
        println!("skipped bore: not installed (--install-tunnels installs it)");
    }
    procs
}

fn which(program: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn print_table(rows: &[Row], idle: Option<&Idle>) {
    let direct = |payload: &str| {
        rows.iter()
            .find(|r| r.path.starts_with("direct") && r.payload == payload)
    };
    println!("\ntools/call echo, loopback, release builds; ratios are against direct (lower latency / higher throughput is better)\n");
    let w = rows.iter().map(|r| r.path.len()).max().unwrap_or(4).max(4);
    println!(
        "{:<w$} {:>4} {:>7} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9} {:>9} {:>8}",
        "path",
        "legs",
        "payload",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p50 x",
        "rps@1",
        "rps@16",
        "rps@64",
        "rps16 x"
    );
    for r in rows {
        let d = direct(r.payload);
        let lat_ratio = d.map_or(f64::NAN, |d| r.latency.p50 / d.latency.p50);
        let rps_ratio = d.map_or(f64::NAN, |d| r.rps[1].1 / d.rps[1].1);
        println!(
            "{:<w$} {:>4} {:>7} {:>9.3} {:>9.3} {:>9.3} {:>8.2} {:>9.0} {:>9.0} {:>9.0} {:>8.2}",
            r.path,
            r.hops,
            r.payload,
            r.latency.p50,
            r.latency.p90,
            r.latency.p99,
            lat_ratio,
            r.rps[0].1,
            r.rps[1].1,
            r.rps[2].1,
            rps_ratio
        );
    }
    if let Some(i) = idle {
        println!(
            "\nidle scale: {} registrations each holding a poll: {:.1} KiB resident per registration \
             ({:.1} MiB -> {:.1} MiB), {:.4} CPU-seconds per second while idle (open-file hard limit {})",
            i.registrations,
            (i.rss_after.saturating_sub(i.rss_before)) as f64 / i.registrations as f64 / 1024.0,
            i.rss_before as f64 / 1048576.0,
            i.rss_after as f64 / 1048576.0,
            i.cpu_per_sec,
            i.fd_limit
        );
    }
}

fn to_json(rows: &[Row], idle: Option<&Idle>, options: &Options) -> Value {
    json!({
        "quick": options.quick,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "rows": rows.iter().map(|r| json!({
            "path": r.path, "legs": r.hops, "payload": r.payload,
            "p50_ms": r.latency.p50, "p90_ms": r.latency.p90, "p99_ms": r.latency.p99,
            "rps": r.rps.iter().map(|(c, v)| (c.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        })).collect::<Vec<_>>(),
        "idle": idle.map(|i| json!({
            "registrations": i.registrations,
            "rss_before_bytes": i.rss_before,
            "rss_after_bytes": i.rss_after,
            "rss_per_registration_bytes": i.rss_after.saturating_sub(i.rss_before) as f64 / i.registrations as f64,
            "cpu_seconds_per_second": i.cpu_per_sec,
            "open_file_hard_limit": i.fd_limit,
        })),
    })
}

fn compare(old_path: &str, new: &Value) -> Result<(), String> {
    let old: Value = serde_json::from_str(
        &std::fs::read_to_string(old_path).map_err(|e| format!("{old_path}: {e}"))?,
    )
    .map_err(|e| format!("{old_path}: {e}"))?;
    println!("\nchange against {old_path} (negative latency / positive throughput is better):");
    for row in new["rows"].as_array().into_iter().flatten() {
        let same = old["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| o["path"] == row["path"] && o["payload"] == row["payload"]);
        let Some(o) = same else { continue };
        let pct = |a: &Value, b: &Value| match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) if a > 0.0 => format!("{:+.1}%", (b - a) / a * 100.0),
            _ => "n/a".into(),
        };
        println!(
            "  {:<18} {:>7}: p50 {:>8}  rps@16 {:>8}",
            row["path"].as_str().unwrap_or(""),
            row["payload"].as_str().unwrap_or(""),
            pct(&o["p50_ms"], &row["p50_ms"]),
            pct(&o["rps"]["16"], &row["rps"]["16"])
        );
    }
    Ok(())
}
