//! `cargo xtask e2e --scale-out`: two `mcp-proxy` instances sharing one Redis
//! (`--broker redis://...`) behind nginx, with reverse servers and clients all going through
//! nginx, as real processes on free loopback ports. Then one instance is SIGKILLed under load.
//!
//! What it asserts:
//! - every reverse server reaches its registration's home with its WebSocket channel through
//!   nginx (configured for upgrades), before the kill and again after it;
//! - every answer is exactly the one asked for, whichever instance the call and the server's
//!   polls went through, and both instances took client traffic;
//! - a named pool and a Streamable HTTP session (its requests spread over both instances by
//!   nginx) work through the load balancer;
//! - after one instance is killed, every call that was in flight either got its right answer
//!   or failed with an error within [`IN_FLIGHT_DEADLINE`] (never a hang, never a wrong
//!   answer); within [`RECOVERY_DEADLINE`] every pool serves again through nginx (the reverse
//!   servers register again by themselves), and from a pool's first success on, every call to
//!   it succeeds;
//! - a channel left idle for over two minutes through nginx's default 60 s read timeout (the
//!   `/channel` location does not raise it) is still the same channel, and answers a call. Its
//!   wait runs beside the other scenarios: its own pool, homed on the instance that survives.
//!
//! redis-server and nginx come from Debian's packages (`xtask/scale-out/install-deps.sh`, run
//! when either is missing); nginx's configuration is `xtask/scale-out/nginx.conf.template`.
//! Finding, installing and starting them is [`crate::infra`]'s.
//!
//! # Layout
//! - this file: the cluster (Redis, two proxies, nginx, four reverse servers), the run, the
//!   processes' logs on failure.
//! - `traffic`: the scenarios before the kill, and the clients and checks all scenarios share.
//! - `load`: the load workers the kill scenario keeps running, and how each call ended.
//! - `kill`: one instance SIGKILLed under load, the verdict on every call, and after the kill.
//! - `idle`: the idle channel through nginx.

mod idle;
mod kill;
mod load;
mod traffic;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::infra::{self, TempDir, Tools};
use crate::procs::{self, listening_url, Proc};
use kill::{after_kill, kill_under_load};
use traffic::{http, named_pool, spread_calls, streamable_session, wait_members};

/// How long a process gets to start and say so.
const START: Duration = Duration::from_secs(30);
/// Every call in flight when an instance dies ends (answered or failed) within this: the
/// proxy declares an instance lost three missed 1 s heartbeats after its last.
const IN_FLIGHT_DEADLINE: Duration = Duration::from_secs(10);
/// After the kill, every pool serves again through nginx within this.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(30);
/// A call that takes longer than this has hung (the longest legitimate one sleeps 2.5 s).
const HUNG: Duration = Duration::from_secs(20);

/// Reverse servers: two in the default pool, one in `alpha`.
const DEFAULT_MEMBERS: usize = 2;
/// The named pool the scenario uses.
const NAMED: &str = "alpha";

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
    /// The reverse server of [`idle::POOL`], which takes no traffic until its scenario.
    idle_reverse: Proc,
    /// When its channel was left idle; taken by its scenario.
    idle_watch: Option<idle::Watch>,
    nginx: Proc,
    instances: Vec<Instance>,
    redis: Proc,
    /// nginx's address: every client and reverse server uses this one.
    url: String,
    rt: tokio::runtime::Runtime,
    /// Redis's and nginx's files (`nginx.conf` among them), removed last.
    dir: TempDir,
}

pub(crate) fn run() -> ExitCode {
    let began = Instant::now();
    let tools = match infra::tools() {
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
        "start Redis, two proxies sharing it, nginx in front, four reverse servers through nginx, each on its WebSocket channel",
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
    procs::timed(
        "a channel idle for 130 s through nginx's default 60 s read timeout, then a call over the same channel",
        &mut results,
        || idle::idle_channel(&mut cluster),
    );
    let ok = results.iter().all(|r| *r);
    if !ok {
        print_logs(&cluster);
    }
    let code = procs::summary(&results, "scale-out scenarios", Some(began));
    drop(cluster);
    code
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

fn start_reverse(url: &str, name: Option<&str>, extra: &[&str]) -> Result<Proc, String> {
    let mut args = vec![url, "--test-tools"];
    args.extend_from_slice(extra);
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
    let (redis, redis_port) = infra::start_redis(tools, dir.path())?;
    let broker = format!("redis://127.0.0.1:{redis_port}");
    let instances = vec![
        start_proxy("mcp-proxy A", &broker)?,
        start_proxy("mcp-proxy B", &broker)?,
    ];
    let upstreams: Vec<&str> = instances.iter().map(|i| i.url.as_str()).collect();
    let (nginx, url) = infra::start_nginx(tools, dir.path(), &upstreams)?;
    // The pools get different homes, so the kill below takes one pool's home (its pool must be
    // taken over) while the other pool's traffic still passes through the killed instance. The
    // idle pool's home is the instance that survives: its channel must not see the kill.
    rt.block_on(async {
        claim_home(&instances[1].url, None).await?;
        claim_home(&instances[0].url, Some(NAMED)).await?;
        claim_home(&instances[0].url, Some(idle::POOL)).await
    })?;
    let mut reverse = Vec::new();
    for _ in 0..DEFAULT_MEMBERS {
        reverse.push(start_reverse(&url, None, &[])?);
    }
    reverse.push(start_reverse(&url, Some(NAMED), &[])?);
    // `ws`: after a 421 from the instance that is not the home it retries the channel without
    // long-polling meanwhile, so no poll of before its channel delays the idle wait's start.
    let idle_reverse = start_reverse(&url, Some(idle::POOL), &["--transport", "ws"])?;
    let mut cluster = Cluster {
        reverse,
        idle_reverse,
        idle_watch: None,
        nginx,
        instances,
        redis,
        url,
        rt,
        dir,
    };
    cluster.rt.block_on(async {
        wait_members(&cluster.url, None, DEFAULT_MEMBERS, START).await?;
        wait_members(&cluster.url, Some(NAMED), 1, START).await?;
        wait_members(&cluster.url, Some(idle::POOL), 1, START).await
    })?;
    cluster.idle_watch = Some(idle::watch(&cluster.rt, &cluster.url, START));
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

/// On failure: the last lines of every process, and all of them in `target/scale-out/`.
fn print_logs(cluster: &Cluster) {
    let named: Vec<(&str, &Proc)> = cluster
        .instances
        .iter()
        .map(|i| (i.name, &i.proc))
        .chain([("nginx", &cluster.nginx), ("redis-server", &cluster.redis)])
        .chain(cluster.reverse.iter().map(|p| ("reverse server", p)))
        .chain([("idle reverse server", &cluster.idle_reverse)])
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
