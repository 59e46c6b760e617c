//! `cargo xtask e2e --scale-out`: two `mcp-proxy` instances sharing one Redis
//! (`--broker redis://...`) behind nginx, with reverse servers and clients all going through
//! nginx, as real processes on free loopback ports. Then one instance is SIGKILLed under load.
//!
//! What it asserts:
//! - every answer is exactly the one asked for, whichever instance the call and the server's
//!   polls went through, and both instances took client traffic;
//! - a named pool and a Streamable HTTP session (its requests spread over both instances by
//!   nginx) work through the load balancer;
//! - after one instance is killed, every call that was in flight either got its right answer
//!   or failed with an error within [`IN_FLIGHT_DEADLINE`] (never a hang, never a wrong
//!   answer); within [`RECOVERY_DEADLINE`] every pool serves again through nginx (the reverse
//!   servers register again by themselves), and from a pool's first success on, every call to
//!   it succeeds.
//!
//! redis-server and nginx come from Debian's packages (`xtask/scale-out/install-deps.sh`, run
//! when either is missing); nginx's configuration is `xtask/scale-out/nginx.conf.template`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcp_client::{text_of, Client, ClientOptions, Error as ClientError};
use serde_json::{json, Value};

use crate::procs::{self, listening_url, Proc};

/// How long a process gets to start and say so.
const START: Duration = Duration::from_secs(30);
/// Every call in flight when an instance dies ends (answered or failed) within this: the
/// proxy declares an instance lost three missed 1 s heartbeats after its last.
const IN_FLIGHT_DEADLINE: Duration = Duration::from_secs(10);
/// After the kill, every pool serves again through nginx within this.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(30);
/// A call that takes longer than this has hung (the longest legitimate one sleeps 2.5 s).
const HUNG: Duration = Duration::from_secs(20);
/// nginx's configuration, with `@DIR@`, `@PORT@` and `@UPSTREAMS@` to fill in.
const NGINX_TEMPLATE: &str = include_str!("../scale-out/nginx.conf.template");

/// Reverse servers: two in the default pool, one in `alpha`.
const DEFAULT_MEMBERS: usize = 2;
/// The named pool the scenario uses.
const NAMED: &str = "alpha";

/// A directory removed when dropped (redis's and nginx's files).
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    /// A fresh `mcp-{tag}-{pid}` under the system's temporary directory.
    pub(crate) fn new(tag: &str) -> Result<TempDir, String> {
        let dir = std::env::temp_dir().join(format!("mcp-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(TempDir(dir))
    }

    pub(crate) fn path(&self) -> &str {
        self.0
            .to_str()
            .expect("the temporary directory's path is UTF-8")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One `mcp-proxy` instance.
struct Instance {
    name: &'static str,
    proc: Proc,
    /// Its own address, bypassing nginx (for its metrics).
    url: String,
}

/// Everything the scenarios run. Fields drop in order: the reverse servers go first (so they
/// do not log a storm of reconnects), then nginx, the proxies, Redis, and the directory.
struct Cluster {
    reverse: Vec<Proc>,
    nginx: Proc,
    instances: Vec<Instance>,
    redis: Proc,
    /// nginx's address: every client and reverse server uses this one.
    url: String,
    rt: tokio::runtime::Runtime,
    /// Redis's and nginx's files, removed last.
    _dir: TempDir,
}

pub(crate) fn run() -> ExitCode {
    let began = Instant::now();
    let tools = match tools() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("FAIL prerequisites: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The binaries the plain e2e builds (a superset of what this runs).
    if let Err(e) = procs::build() {
        eprintln!("FAIL build: {e}");
        return ExitCode::FAILURE;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut results = Vec::new();
    let Some(mut cluster) = procs::timed(
        "start Redis, two proxies sharing it, nginx in front, three reverse servers through nginx",
        &mut results,
        || start(&tools, rt),
    ) else {
        return procs::summary(&results, "scale-out scenarios", Some(began));
    };
    procs::timed(
        "400 concurrent calls through nginx, each answer its own, both instances serving",
        &mut results,
        || spread_calls(&cluster, 400),
    );
    procs::timed(
        "named pool through nginx over /message and /mcp; an absent pool is named in a 503",
        &mut results,
        || named_pool(&cluster),
    );
    procs::timed(
        "Streamable HTTP session through nginx: initialize, tools/list, tools/call, ping, close",
        &mut results,
        || streamable_session(&cluster),
    );
    procs::timed(
        "one proxy SIGKILLed under load: in-flight calls right or failed fast, then served again",
        &mut results,
        || kill_under_load(&mut cluster),
    );
    procs::timed(
        "after the kill: pools whole again, 300 calls through nginx all right",
        &mut results,
        || after_kill(&cluster),
    );
    let ok = results.iter().all(|r| *r);
    if !ok {
        print_logs(&cluster);
    }
    let code = procs::summary(&results, "scale-out scenarios", Some(began));
    drop(cluster);
    code
}

/// redis-server and nginx, installed by `install-deps.sh` when either is missing.
pub(crate) struct Tools {
    pub(crate) redis: PathBuf,
    nginx: PathBuf,
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    // nginx lives in /usr/sbin, which a non-root PATH may lack.
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Finds redis-server and nginx, running `install-deps.sh` first when either is missing.
pub(crate) fn tools() -> Result<Tools, String> {
    let found = || {
        Some(Tools {
            redis: find_tool("redis-server")?,
            nginx: find_tool("nginx")?,
        })
    };
    if let Some(tools) = found() {
        return Ok(tools);
    }
    let root = procs::workspace_root();
    println!("redis-server or nginx not found: running xtask/scale-out/install-deps.sh");
    procs::run_shown(
        Path::new("bash"),
        &["xtask/scale-out/install-deps.sh"],
        &root,
    )
    .map_err(|e| {
        format!(
            "{e}\nredis-server and nginx are needed: run `bash xtask/scale-out/install-deps.sh` \
             as root (Debian/Ubuntu), or install both by other means"
        )
    })?;
    found().ok_or_else(|| "redis-server or nginx still not found after install-deps.sh".into())
}

/// A port that was free a moment ago (bound to 127.0.0.1:0, read back, released).
fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot bind 127.0.0.1:0: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// Starts a program on a free port: `attempt` answers `Ok(None)` when the program could not
/// bind it (someone took it between our probe and its bind), and then another port is tried.
fn on_free_port<T>(
    what: &str,
    mut attempt: impl FnMut(u16) -> Result<Option<T>, String>,
) -> Result<T, String> {
    for _ in 0..5 {
        if let Some(started) = attempt(free_port()?)? {
            return Ok(started);
        }
    }
    Err(format!("{what} found no free port in 5 tries"))
}

fn port_taken(proc: &Proc) -> bool {
    proc.output()
        .iter()
        .any(|l| l.contains("Address already in use"))
}

/// A `redis-server` on a free loopback port, keeping nothing on disk; its port.
pub(crate) fn start_redis(tools: &Tools, dir: &str) -> Result<(Proc, u16), String> {
    on_free_port("redis-server", |port| {
        let port_arg = port.to_string();
        let mut redis = Proc::spawn(
            "redis-server",
            &tools.redis,
            &[
                "--port",
                &port_arg,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                dir,
            ],
        )?;
        match redis.wait_for_line(START, |l| {
            l.contains("Ready to accept connections").then_some(())
        }) {
            Ok(()) => Ok(Some((redis, port))),
            Err(_) if port_taken(&redis) => Ok(None),
            Err(e) => Err(e),
        }
    })
}

fn start_proxy(name: &'static str, broker: &str) -> Result<Instance, String> {
    let mut proc = Proc::spawn(
        name,
        &procs::binary("mcp-proxy"),
        &["--listen", "127.0.0.1", "--port", "0", "--broker", broker],
    )?;
    let url = proc.wait_for_line(START, listening_url)?;
    Ok(Instance { name, proc, url })
}

fn start_nginx(tools: &Tools, dir: &str, upstreams: &[&str]) -> Result<(Proc, String), String> {
    let servers: String = upstreams.iter().fold(String::new(), |mut s, url| {
        let addr = url.trim_start_matches("http://");
        let _ = writeln!(s, "        server {addr} max_fails=1 fail_timeout=2s;");
        s
    });
    let conf = Path::new(dir).join("nginx.conf");
    let conf_arg = conf.to_str().expect("UTF-8 path").to_owned();
    on_free_port("nginx", |port| {
        let text = NGINX_TEMPLATE
            .replace("@DIR@", dir)
            .replace("@PORT@", &port.to_string())
            .replace("@UPSTREAMS@", servers.trim_end());
        std::fs::write(&conf, text).map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
        let mut nginx = Proc::spawn(
            "nginx",
            &tools.nginx,
            &[
                "-p",
                dir,
                "-c",
                &conf_arg,
                "-e",
                "stderr",
                "-g",
                "daemon off;",
            ],
        )?;
        let url = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        // Ready when a proxy's /healthz answers through it.
        loop {
            if procs::healthz(&url).is_some() {
                return Ok(Some((nginx, url)));
            }
            if let Ok(status) = nginx.wait_exit(Duration::ZERO) {
                if port_taken(&nginx) {
                    return Ok(None);
                }
                return Err(format!(
                    "nginx exited ({status}):\n{}",
                    nginx.output().join("\n")
                ));
            }
            if start.elapsed() > START {
                return Err(format!(
                    "nginx did not pass /healthz through within {START:?}:\n{}",
                    nginx.output().join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

fn start_reverse(url: &str, name: Option<&str>) -> Result<Proc, String> {
    let mut args = vec![url, "--test-tools"];
    if let Some(name) = name {
        args.extend(["--name", name]);
    }
    Proc::spawn(
        &format!("reverse_server_example {}", name.unwrap_or("(default)")),
        &procs::binary("examples/reverse_server_example"),
        &args,
    )
}

fn start(tools: &Tools, rt: tokio::runtime::Runtime) -> Result<Cluster, String> {
    let dir = TempDir::new("scale-out")?;
    let (redis, redis_port) = start_redis(tools, dir.path())?;
    let broker = format!("redis://127.0.0.1:{redis_port}");
    let instances = vec![
        start_proxy("mcp-proxy A", &broker)?,
        start_proxy("mcp-proxy B", &broker)?,
    ];
    let upstreams: Vec<&str> = instances.iter().map(|i| i.url.as_str()).collect();
    let (nginx, url) = start_nginx(tools, dir.path(), &upstreams)?;
    // The pools get different homes, so the kill below takes one pool's home (its pool must be
    // taken over) while the other pool's traffic still passes through the killed instance.
    rt.block_on(async {
        claim_home(&instances[1].url, None).await?;
        claim_home(&instances[0].url, Some(NAMED)).await
    })?;
    let mut reverse = Vec::new();
    for _ in 0..DEFAULT_MEMBERS {
        reverse.push(start_reverse(&url, None)?);
    }
    reverse.push(start_reverse(&url, Some(NAMED))?);
    let cluster = Cluster {
        reverse,
        nginx,
        instances,
        redis,
        url,
        rt,
        _dir: dir,
    };
    cluster.rt.block_on(async {
        wait_members(&cluster.url, None, DEFAULT_MEMBERS, START).await?;
        wait_members(&cluster.url, Some(NAMED), 1, START).await
    })?;
    println!(
        "     redis on {redis_port}, instances {} and {}, nginx {}",
        cluster.instances[0].url, cluster.instances[1].url, cluster.url
    );
    Ok(cluster)
}

/// Makes the instance at `url` the home of `pool` (`None`: the default pool): a registration
/// made there directly (not through nginx) claims the pool, and leaving at once keeps the claim,
/// since a pool keeps its home while that instance lives (docs/protocol.md, Several instances).
async fn claim_home(url: &str, pool: Option<&str>) -> Result<(), String> {
    let http = http()?;
    let mut body = json!({"type": "mcp_server"});
    if let Some(pool) = pool {
        body["name"] = json!(pool);
    }
    let registered: Value = http
        .post(format!("{url}/register"))
        .json(&body)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("POST {url}/register: {e}"))?
        .json()
        .await
        .map_err(|e| format!("POST {url}/register: {e}"))?;
    let id = registered["session_id"]
        .as_str()
        .ok_or_else(|| format!("POST {url}/register answered {registered}"))?;
    http.delete(format!("{url}/register"))
        .query(&[("session_id", id)])
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("DELETE {url}/register: {e}"))?;
    Ok(())
}

/// A plain HTTP client for the operator routes (no proxy from the environment).
fn http() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())
}

/// Waits until the pool counts `n` members in `GET /servers` through `url`.
async fn wait_members(
    url: &str,
    pool: Option<&str>,
    n: usize,
    deadline: Duration,
) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let got = procs::pool_members(url, pool).await;
        if got.as_ref().is_ok_and(|m| m.len() == n) {
            return Ok(());
        }
        if start.elapsed() > deadline {
            return Err(format!(
                "pool {} has not {n} members after {deadline:?}: {got:?}",
                pool.unwrap_or("(default)")
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The sum of an instance's metric lines that start with `prefix`, from its own `/metrics`.
async fn metric(url: &str, prefix: &str) -> Result<f64, String> {
    let text = http()?
        .get(format!("{url}/metrics"))
        .send()
        .await
        .map_err(|e| format!("GET {url}/metrics: {e}"))?
        .text()
        .await
        .map_err(|e| format!("GET {url}/metrics: {e}"))?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// Requests an instance relayed to another one's pools.
const RELAYED_OUT: &str = "mcp_proxy_relayed_total{direction=\"out\"}";
/// Requests an instance served for another one.
const RELAYED_IN: &str = "mcp_proxy_relayed_total{direction=\"in\"}";

/// Both instances' relay counters: `[(out, in)]`.
async fn relays(cluster: &Cluster) -> Result<Vec<(f64, f64)>, String> {
    let mut counts = Vec::new();
    for i in &cluster.instances {
        counts.push((
            metric(&i.url, RELAYED_OUT).await?,
            metric(&i.url, RELAYED_IN).await?,
        ));
    }
    Ok(counts)
}

/// Checks that both instances took part in what happened between `before` and now: requests
/// reached the pool's home through the other instance (relayed out there, in at the home).
async fn both_took_part(
    cluster: &Cluster,
    before: &[(f64, f64)],
    what: &str,
) -> Result<String, String> {
    let after = relays(cluster).await?;
    let mut report = Vec::new();
    for ((i, (out0, in0)), (out1, in1)) in cluster.instances.iter().zip(before).zip(&after) {
        report.push(format!(
            "{} relayed {} out, {} in",
            i.name,
            out1 - out0,
            in1 - in0
        ));
    }
    let relayed_out: f64 = after.iter().zip(before).map(|(a, b)| a.0 - b.0).sum();
    let relayed_in: f64 = after.iter().zip(before).map(|(a, b)| a.1 - b.1).sum();
    if relayed_out < 1.0 || relayed_in < 1.0 {
        return Err(format!(
            "{what}: no request went through the instance that is not the pool's home \
             (nginx did not spread them, or nothing was relayed): {}",
            report.join("; ")
        ));
    }
    Ok(report.join("; "))
}

fn client(url: &str) -> Result<Client, String> {
    let options = ClientOptions {
        timeout: Duration::from_secs(120),
        ..ClientOptions::default()
    };
    Client::with_options(url, options).map_err(|e| e.to_string())
}

/// Calls echo with `text` and checks the answer is exactly it.
async fn echo(client: &Client, text: &str) -> Result<(), String> {
    let result = client
        .call_tool("echo", json!({ "text": text }))
        .await
        .map_err(|e| e.to_string())?;
    let answer = text_of(&result);
    if answer == text {
        Ok(())
    } else {
        Err(format!("asked {text:?}, got {answer:?}"))
    }
}

/// `n` concurrent echo calls over 16 clients (nginx spreads each client's requests over both
/// instances); every answer must be its own question's.
async fn many_calls(endpoint: &str, n: usize, tag: &str) -> Result<(), String> {
    let clients: Vec<Arc<Client>> = (0..16)
        .map(|_| client(endpoint).map(Arc::new))
        .collect::<Result<_, _>>()?;
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let client = clients[i % clients.len()].clone();
            let text = format!("{tag} {i}: {}", "x".repeat(i % 23));
            tokio::spawn(async move { echo(&client, &text).await })
        })
        .collect();
    let mut failures = Vec::new();
    for call in calls {
        if let Err(e) = call.await.map_err(|e| e.to_string()).and_then(|r| r) {
            failures.push(e);
        }
    }
    match failures.first() {
        None => Ok(()),
        Some(first) => Err(format!(
            "{} of {n} calls to {endpoint} failed; first: {first}",
            failures.len()
        )),
    }
}

fn spread_calls(cluster: &Cluster, n: usize) -> Result<(), String> {
    cluster.rt.block_on(async {
        let before = relays(cluster).await?;
        many_calls(&cluster.url, n, "question").await?;
        let report = both_took_part(cluster, &before, "default pool").await?;
        println!("     {report}");
        Ok(())
    })
}

fn named_pool(cluster: &Cluster) -> Result<(), String> {
    cluster.rt.block_on(async {
        many_calls(
            &format!("{}/servers/{NAMED}/message", cluster.url),
            100,
            NAMED,
        )
        .await?;
        let session = client(&format!("{}/servers/{NAMED}/mcp", cluster.url))?;
        session.initialize().await.map_err(|e| e.to_string())?;
        for i in 0..10 {
            echo(&session, &format!("{NAMED} session call {i}")).await?;
        }
        session.close().await.map_err(|e| e.to_string())?;
        // Twice, so both instances answer it (round robin).
        for _ in 0..2 {
            let absent = client(&format!("{}/servers/gamma/message", cluster.url))?;
            match absent.call_tool("echo", json!({"text": "x"})).await {
                Err(ClientError::Status {
                    status: 503, body, ..
                }) if body.contains("gamma") => {}
                other => return Err(format!("an absent pool answered {other:?}")),
            }
        }
        Ok(())
    })
}

fn streamable_session(cluster: &Cluster) -> Result<(), String> {
    cluster.rt.block_on(async {
        let session = client(&format!("{}/mcp", cluster.url))?;
        let info = session.initialize().await.map_err(|e| e.to_string())?;
        if info.server_info.name != "Reverse MCP Server" {
            return Err(format!("initialize answered {:?}", info.server_info));
        }
        let before = relays(cluster).await?;
        let tools = session.list_tools().await.map_err(|e| e.to_string())?;
        if !tools.iter().any(|t| t.name == "echo") {
            let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
            return Err(format!("tools/list has no echo: {names:?}"));
        }
        // Sequential, so round robin alternates them between the instances.
        for i in 0..20 {
            echo(&session, &format!("session call {i}")).await?;
        }
        session.ping().await.map_err(|e| e.to_string())?;
        both_took_part(cluster, &before, "session").await?;
        session.close().await.map_err(|e| e.to_string())?;
        // Closed means closed, on every instance.
        match session
            .call_tool("echo", json!({"text": "after close"}))
            .await
        {
            Ok(r) => Err(format!("a closed session still answered {:?}", text_of(&r))),
            Err(_) => Ok(()),
        }
    })
}

/// How one call of the load ended.
#[derive(Debug)]
enum End {
    /// The right answer.
    Right,
    /// An answer, but not this call's.
    Wrong(String),
    /// An error (the proxy's, nginx's, or a session the proxy forgot).
    Failed(String),
    /// No answer within [`HUNG`].
    Hung,
}

/// One call of the load.
#[derive(Debug)]
struct Call {
    route: &'static str,
    /// What it asked (its echo text).
    text: String,
    started: Instant,
    ended: Instant,
    end: End,
}

type Log = Arc<Mutex<Vec<Call>>>;

/// Calls echo through `endpoint` with unique texts until `stop`, logging every call. A
/// Streamable HTTP worker (`session`) initializes first and again after a 404.
async fn load_worker(
    route: &'static str,
    endpoint: String,
    w: usize,
    session: bool,
    stop: Arc<AtomicBool>,
    log: Log,
) -> Result<(), String> {
    let client = client(&endpoint)?;
    let mut need_init = session;
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let started = Instant::now();
        let text = format!("{route} worker {w} call {n}");
        let outcome = if need_init {
            tokio::time::timeout(HUNG, client.initialize())
                .await
                .map(|r| r.map(|_| ()))
        } else {
            tokio::time::timeout(HUNG, client.call_tool("echo", json!({ "text": text })))
                .await
                .map(|r| {
                    r.and_then(|result| {
                        let answer = text_of(&result);
                        if answer == text {
                            Ok(())
                        } else {
                            Err(ClientError::InvalidResponse(format!(
                                "WRONG ANSWER: asked {text:?}, got {answer:?}"
                            )))
                        }
                    })
                })
        };
        let end = match outcome {
            Err(_) => End::Hung,
            Ok(Ok(())) => {
                need_init = false;
                End::Right
            }
            Ok(Err(ClientError::InvalidResponse(m))) if m.starts_with("WRONG ANSWER") => {
                End::Wrong(m)
            }
            Ok(Err(e)) => {
                if session && matches!(e, ClientError::SessionExpired) {
                    need_init = true;
                }
                End::Failed(if need_init && !matches!(e, ClientError::SessionExpired) {
                    format!("initialize: {}", describe(&e))
                } else {
                    describe(&e)
                })
            }
        };
        let failed = !matches!(end, End::Right);
        log.lock().expect("log lock").push(Call {
            route,
            text,
            started,
            ended: Instant::now(),
            end,
        });
        if failed {
            // Failures come at once while no server is there: do not spin on them.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// The instance to kill: the default pool's home (so its pools must be taken over), when the
/// named pool's home is the other one, as [`start`] arranged.
fn victim(cluster: &Cluster) -> Result<(usize, String), String> {
    let pools = cluster.rt.block_on(procs::servers(&cluster.url))?;
    let home_of = |name: Value| {
        pools["pools"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == name)
            .and_then(|p| p["home"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| format!("no home for pool {name} in /servers: {pools}"))
    };
    let default_home = home_of(Value::Null)?;
    let named_home = home_of(Value::String(NAMED.to_owned()))?;
    let mut ids = Vec::new();
    for i in &cluster.instances {
        let health = procs::healthz(&i.url).ok_or_else(|| format!("{} has no /healthz", i.name))?;
        ids.push(health["instance"].as_str().unwrap_or_default().to_owned());
    }
    let name_of = |id: &str| {
        ids.iter()
            .position(|i| i == id)
            .map(|v| cluster.instances[v].name)
            .ok_or_else(|| format!("home {id} is none of the instances {ids:?}"))
    };
    if default_home == named_home {
        return Err(format!(
            "both pools are homed on {}: the homes claimed at the start did not hold",
            name_of(&default_home)?
        ));
    }
    let v = ids.iter().position(|i| *i == default_home);
    let v = v.ok_or_else(|| format!("home {default_home} is none of the instances {ids:?}"))?;
    Ok((
        v,
        format!(
            "the default pool's home; {NAMED}'s home is {}",
            name_of(&named_home)?
        ),
    ))
}

fn kill_under_load(cluster: &mut Cluster) -> Result<(), String> {
    const ROUTES: [(&str, &str, bool, usize); 3] = [
        ("default /message", "/message", false, 12),
        ("alpha /message", "/servers/alpha/message", false, 4),
        ("default /mcp", "/mcp", true, 4),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let log: Log = Arc::default();
    let mut workers = Vec::new();
    for (route, path, session, count) in ROUTES {
        for w in 0..count {
            workers.push(cluster.rt.spawn(load_worker(
                route,
                format!("{}{path}", cluster.url),
                w,
                session,
                stop.clone(),
                log.clone(),
            )));
        }
    }
    let calls = || log.lock().expect("log lock").len();
    wait_for(Duration::from_secs(30), || calls() >= 300)?;

    // Calls pending on the servers when the instance dies: each sleeps 2.5 s.
    let sleepers: Vec<_> = (0..6)
        .map(|i| {
            let endpoint = if i % 2 == 0 {
                format!("{}/message", cluster.url)
            } else {
                format!("{}/servers/{NAMED}/message", cluster.url)
            };
            cluster.rt.spawn(async move {
                let client = client(&endpoint)?;
                let started = Instant::now();
                let end =
                    tokio::time::timeout(HUNG, client.call_tool("sleep", json!({"seconds": 2.5})))
                        .await;
                let end = match end {
                    Err(_) => End::Hung,
                    Ok(Ok(r)) if text_of(&r) == "Slept 2.5 seconds" => End::Right,
                    Ok(Ok(r)) => End::Wrong(format!("sleep answered {:?}", text_of(&r))),
                    Ok(Err(e)) => End::Failed(describe(&e)),
                };
                Ok::<_, String>(Call {
                    route: "sleep 2.5 s",
                    text: format!("sleep {i}"),
                    started,
                    ended: Instant::now(),
                    end,
                })
            })
        })
        .collect();
    let sleeping = |reverse: &[Proc]| {
        reverse
            .iter()
            .flat_map(|p| p.output())
            .filter(|l| l.contains("sleep tool started"))
            .count()
    };
    let wait_sleeping = Instant::now();
    while sleeping(&cluster.reverse) < sleepers.len() {
        if wait_sleeping.elapsed() > START {
            stop.store(true, Ordering::Relaxed);
            return Err("the sleep calls did not reach the servers".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    let (v, why) = match victim(cluster) {
        Ok(v) => v,
        Err(e) => {
            stop.store(true, Ordering::Relaxed);
            return Err(e);
        }
    };
    let before_kill = calls();
    let killed_at = Instant::now();
    cluster.instances[v].proc.kill();
    println!("     killed at {} UTC", utc(killed_at));
    let victim_name = cluster.instances[v].name;

    // Load goes on until every route has served 100 calls after its recovery (or the deadline).
    let recovered = |log: &[Call]| -> BTreeMap<&'static str, Instant> {
        let mut first = BTreeMap::new();
        for c in log.iter().filter(|c| c.started > killed_at) {
            if matches!(c.end, End::Right) {
                let e = first.entry(c.route).or_insert(c.ended);
                *e = (*e).min(c.ended);
            }
        }
        first
    };
    let enough = || {
        let log = log.lock().expect("log lock");
        let first = recovered(&log);
        first.len() == ROUTES.len()
            && first.iter().all(|(route, at)| {
                log.iter()
                    .filter(|c| c.route == *route && c.started > *at)
                    .count()
                    >= 100
            })
    };
    let waited = wait_for(RECOVERY_DEADLINE + Duration::from_secs(30), enough);
    stop.store(true, Ordering::Relaxed);
    let mut problems = Vec::new();
    for w in workers {
        if let Err(e) = cluster
            .rt
            .block_on(w)
            .map_err(|e| e.to_string())
            .and_then(|r| r)
        {
            problems.push(format!("a load worker stopped: {e}"));
        }
    }
    let mut log = std::mem::take(&mut *log.lock().expect("log lock"));
    for s in sleepers {
        log.push(cluster.rt.block_on(s).map_err(|e| e.to_string())??);
    }

    // Judge.
    let first = recovered(&log);
    let in_flight: Vec<&Call> = log
        .iter()
        .filter(|c| c.started <= killed_at && c.ended > killed_at)
        .collect();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut latest_failure = Duration::ZERO;
    for c in &log {
        match &c.end {
            End::Right => {}
            End::Wrong(m) => problems.push(format!("{}: {m}", c.route)),
            End::Hung => problems.push(format!(
                "{}: {:?} hung for {HUNG:?} (started {:.2} s after the kill, at {} UTC)",
                c.route,
                c.text,
                secs_since(killed_at, c.started),
                utc(c.started)
            )),
            End::Failed(m) => {
                *errors.entry(shorten(m)).or_default() += 1;
                if c.started <= killed_at {
                    latest_failure = latest_failure.max(c.ended.duration_since(killed_at));
                }
                if first.get(c.route).is_some_and(|at| c.started > *at) {
                    problems.push(format!(
                        "{}: a call failed {:.1} s after the route served again: {m}",
                        c.route,
                        secs_since(*first.get(c.route).expect("checked"), c.started)
                    ));
                }
            }
        }
    }
    for c in &in_flight {
        if c.ended.duration_since(killed_at) > IN_FLIGHT_DEADLINE {
            problems.push(format!(
                "{}: a call in flight at the kill ended only {:.1} s after it ({:?})",
                c.route,
                secs_since(killed_at, c.ended),
                c.end
            ));
        }
    }
    for (route, ..) in ROUTES {
        match first.get(route) {
            Some(at) if at.duration_since(killed_at) <= RECOVERY_DEADLINE => {}
            Some(at) => problems.push(format!(
                "{route} served again only {:.1} s after the kill",
                secs_since(killed_at, *at)
            )),
            None => problems.push(format!("{route} never served again after the kill")),
        }
    }
    if let Err(e) = waited {
        problems.push(format!(
            "the load did not reach 100 calls per route after recovery: {e}"
        ));
    }
    let in_flight_right = in_flight
        .iter()
        .filter(|c| matches!(c.end, End::Right))
        .count();
    println!(
        "     killed {victim_name} ({why}) after {before_kill} calls; {} calls in flight at the kill: \
         {in_flight_right} answered right, {} failed, the last failure {:.2} s after the kill",
        in_flight.len(),
        in_flight.len() - in_flight_right,
        latest_failure.as_secs_f64()
    );
    for (route, at) in &first {
        println!(
            "     {route}: served again {:.2} s after the kill",
            secs_since(killed_at, *at)
        );
    }
    println!(
        "     {} calls in all, {} failed: {errors:?}",
        log.len(),
        errors.values().sum::<usize>()
    );
    if problems.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = problems.iter().take(10).map(String::as_str).collect();
    Err(format!(
        "{} problems:\n       {}",
        problems.len(),
        shown.join("\n       ")
    ))
}

fn after_kill(cluster: &Cluster) -> Result<(), String> {
    cluster.rt.block_on(async {
        // The reverse servers registered again by themselves on the surviving instance.
        wait_members(&cluster.url, None, DEFAULT_MEMBERS, RECOVERY_DEADLINE).await?;
        wait_members(&cluster.url, Some(NAMED), 1, RECOVERY_DEADLINE).await?;
        many_calls(&cluster.url, 150, "after").await?;
        many_calls(
            &format!("{}/servers/{NAMED}/message", cluster.url),
            100,
            "after",
        )
        .await?;
        let session = client(&format!("{}/mcp", cluster.url))?;
        session.initialize().await.map_err(|e| e.to_string())?;
        for i in 0..50 {
            echo(&session, &format!("after the kill, session call {i}")).await?;
        }
        session.close().await.map_err(|e| e.to_string())
    })?;
    for p in &cluster.reverse {
        if let Some(line) = p.output().iter().find(|l| l.contains("panicked")) {
            return Err(format!("a reverse server panicked: {line}"));
        }
    }
    Ok(())
}

/// The wall-clock time of `at` as `HH:MM:SS.mmm` UTC, to find it in the processes' logs.
fn utc(at: Instant) -> String {
    let now = std::time::SystemTime::now();
    let then = now
        .checked_sub(Instant::now().saturating_duration_since(at))
        .unwrap_or(now);
    let ms = then
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
        % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

fn secs_since(earlier: Instant, later: Instant) -> f64 {
    later.saturating_duration_since(earlier).as_secs_f64()
}

/// A failed call as the report counts it: the HTTP status and JSON-RPC code when there are
/// some, nginx's own error pages by their title.
fn describe(e: &ClientError) -> String {
    match e {
        ClientError::Status {
            status,
            rpc: Some(rpc),
            ..
        } => {
            format!("HTTP {status} JSON-RPC {}: {}", rpc.code, rpc.message)
        }
        ClientError::Status { status, body, .. } if body.contains("<html>") => {
            format!("HTTP {status} from nginx (an HTML error page)")
        }
        other => other.to_string(),
    }
}

/// The start of an error message, to count errors by kind.
fn shorten(message: &str) -> String {
    message.chars().take(100).collect()
}

/// Waits until `cond` holds, or fails after `deadline`.
fn wait_for(deadline: Duration, cond: impl Fn() -> bool) -> Result<(), String> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > deadline {
            return Err(format!("condition not reached in {deadline:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// On failure: the last lines of every process, and all of them in `target/scale-out/`.
fn print_logs(cluster: &Cluster) {
    let named: Vec<(&str, &Proc)> = cluster
        .instances
        .iter()
        .map(|i| (i.name, &i.proc))
        .chain([("nginx", &cluster.nginx), ("redis-server", &cluster.redis)])
        .chain(cluster.reverse.iter().map(|p| ("reverse server", p)))
        .collect();
    let logs = procs::target_dir().join("scale-out");
    let _ = std::fs::create_dir_all(&logs);
    for (n, (name, proc)) in named.into_iter().enumerate() {
        let out: Vec<String> = proc.output().iter().map(|l| plain(l)).collect();
        let file = logs.join(format!("{n}-{}.log", name.replace(' ', "-")));
        let _ = std::fs::write(&file, out.join("\n"));
        println!(
            "----- {name}: last lines of {} ({})",
            out.len(),
            file.display()
        );
        for line in out.iter().skip(out.len().saturating_sub(15)) {
            println!("  {line}");
        }
    }
}

/// `line` without ANSI colour codes (the logs colour their fields).
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
