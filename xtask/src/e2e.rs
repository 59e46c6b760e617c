//! `cargo xtask e2e`: the seed's "Testing Locally" walkthrough and fault scenarios, with the
//! proxy, reverse servers and clients as real processes on free loopback ports.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcp_client::{text_of, Client, Error as ClientError};
use serde_json::{json, Value};

use crate::procs::{self, listening_url, Proc};

/// How long a process gets to start and say so.
const START: Duration = Duration::from_secs(30);

/// What the seed's walkthrough prints, in order (a line may carry more after these words).
const WALKTHROUGH: &[&str] = &[
    "[INFO] === MCP Proxy Client Example ===",
    "[INFO] 1. Initializing connection...",
    "[INFO] Initialization successful!",
    "[INFO] Server: Reverse MCP Server v1.0.0",
    "[INFO] 2. Listing available tools...",
    "[INFO] Available tools:",
    "[INFO]   - get_time: Get the current system time",
    "[INFO]   - calculator: Perform basic arithmetic operations",
    "[INFO]   - echo: Echo back the provided text",
    "[INFO] 3. Calling 'get_time' tool...",
    "[INFO] Result: Current time: ",
    "[INFO] 4. Calling 'calculator' tool (add 15 + 27)...",
    "[INFO] Result: Result: 42.000000",
    "[INFO] 5. Calling 'echo' tool...",
    "[INFO] Result: HELLO FROM REVERSE PROXY!",
    "[INFO] 6. Sending ping...",
    "[INFO] Ping successful!",
    "[INFO] === All tests completed successfully! ===",
];

struct World {
    proxy: Proc,
    url: String,
    port: u16,
    reverse: Proc,
    rt: tokio::runtime::Runtime,
}

pub(crate) fn run() -> ExitCode {
    if let Err(e) = procs::build() {
        eprintln!("FAIL build: {e}");
        return ExitCode::FAILURE;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut results = Vec::new();
    let mut world = match procs::timed("start proxy and reverse server", &mut results, || start(rt))
    {
        Some(w) => w,
        None => return procs::summary(&results, "scenarios", None),
    };
    procs::timed(
        "seed walkthrough (proxy_client_example)",
        &mut results,
        || walkthrough(&world),
    );
    procs::timed(
        "200 concurrent calls, each answer matches its question",
        &mut results,
        || concurrent_calls(&world, 200),
    );
    procs::timed(
        "reverse server killed mid-call: client fails fast",
        &mut results,
        || killed_server(&mut world),
    );
    procs::timed(
        "proxy restart: reverse server comes back by itself",
        &mut results,
        || proxy_restart(&mut world),
    );
    procs::timed(
        "two named servers side by side, each reached by name",
        &mut results,
        || named_servers(&world),
    );
    procs::timed(
        "pool of two, one killed mid-load: calls keep succeeding, pinned sessions re-initialize",
        &mut results,
        || pool_failover(&world),
    );
    procs::timed(crate::hostile::NAME, &mut results, || {
        crate::hostile::run(&world.rt)
    });
    procs::summary(&results, "scenarios", None)
}

fn start_proxy(port: u16) -> Result<(Proc, String), String> {
    let port = port.to_string();
    let mut proxy = Proc::spawn(
        "mcp-proxy",
        &procs::binary("mcp-proxy"),
        &["--listen", "127.0.0.1", "--port", &port],
    )?;
    let url = proxy.wait_for_line(START, listening_url)?;
    Ok((proxy, url))
}

fn start_reverse(url: &str, extra: &[&str]) -> Result<Proc, String> {
    let mut args = vec![url];
    args.extend_from_slice(extra);
    Proc::spawn(
        "reverse_server_example",
        &procs::binary("examples/reverse_server_example"),
        &args,
    )
}

fn start(rt: tokio::runtime::Runtime) -> Result<World, String> {
    let (proxy, url) = start_proxy(0)?;
    let port = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("no port in {url}"))?;
    let reverse = start_reverse(&url, &[])?;
    procs::wait_registrations(&url, 1, START)?;
    Ok(World {
        proxy,
        url,
        port,
        reverse,
        rt,
    })
}

fn walkthrough(world: &World) -> Result<(), String> {
    let mut client = Proc::spawn(
        "proxy_client_example",
        &procs::binary("examples/proxy_client_example"),
        &[&world.url],
    )?;
    let status = client.wait_exit(Duration::from_secs(60))?;
    let output = client.output();
    let mut lines = output.iter();
    for expected in WALKTHROUGH {
        if !lines.any(|l| l.starts_with(expected)) {
            return Err(format!(
                "missing or out of order: {expected:?}; the client printed:\n{}",
                output.join("\n")
            ));
        }
    }
    if !status.success() {
        return Err(format!("the client exited with {status}"));
    }
    Ok(())
}

fn concurrent_calls(world: &World, n: usize) -> Result<(), String> {
    world.rt.block_on(async {
        let client = Arc::new(Client::connect(&world.url).map_err(|e| e.to_string())?);
        client.initialize().await.map_err(|e| e.to_string())?;
        let calls = (0..n).map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let text = format!("question {i}: {}", "x".repeat(i % 17));
                let result = client
                    .call_tool("echo", json!({"text": text}))
                    .await
                    .map_err(|e| format!("call {i}: {e}"))?;
                let answer = text_of(&result);
                if answer == text {
                    Ok(())
                } else {
                    Err(format!("call {i} asked {text:?} and got {answer:?}"))
                }
            })
        });
        let mut failures = Vec::new();
        for call in calls.collect::<Vec<_>>() {
            if let Err(e) = call.await.map_err(|e| e.to_string()).and_then(|r| r) {
                failures.push(e);
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} of {n} calls failed; first: {}",
                failures.len(),
                failures[0]
            ))
        }
    })
}

fn killed_server(world: &mut World) -> Result<(), String> {
    let mut faulty = start_reverse(&world.url, &["--name", "faulty", "--test-tools"])?;
    procs::wait_registrations(&world.url, 2, START)?;
    let endpoint = format!("{}/servers/faulty/message", world.url);
    let call = world.rt.spawn(async move {
        let client = Client::connect(&endpoint).map_err(|e| e.to_string())?;
        let result = client.call_tool("sleep", json!({"seconds": 120})).await;
        Ok::<_, String>((Instant::now(), result))
    });
    // The tool logs when it starts: only then is the call really pending on the server.
    faulty.wait_for_line(START, |l| l.contains("sleep tool started").then_some(()))?;
    let killed_at = Instant::now();
    faulty.kill();
    let (answered_at, result) = world
        .rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(60), call).await })
        .map_err(|_| "the client was still waiting 60 s after the kill".to_owned())?
        .map_err(|e| e.to_string())??;
    let waited = answered_at.duration_since(killed_at);
    match result {
        Ok(r) => Err(format!(
            "the call succeeded after the kill: {}",
            text_of(&r)
        )),
        Err(e) if waited <= Duration::from_secs(15) => {
            println!(
                "     client got \"{e}\" {:.2}s after the kill",
                waited.as_secs_f64()
            );
            Ok(())
        }
        Err(e) => Err(format!("error came only after {waited:?}: {e}")),
    }
}

fn proxy_restart(world: &mut World) -> Result<(), String> {
    match world.proxy.terminate(Duration::from_secs(20)) {
        Some(status) if status.success() => {}
        Some(status) => return Err(format!("the proxy exited with {status} on SIGTERM")),
        None => return Err("the proxy did not exit within 20 s of SIGTERM".into()),
    }
    let (proxy, url) = start_proxy(world.port)?;
    world.proxy = proxy;
    if url != world.url {
        return Err(format!("restarted on {url}, expected {}", world.url));
    }
    procs::wait_registrations(&world.url, 1, START)?;
    world.rt.block_on(async {
        let client = Client::connect(&world.url).map_err(|e| e.to_string())?;
        let result = client
            .call_tool("echo", json!({"text": "after restart"}))
            .await
            .map_err(|e| e.to_string())?;
        match text_of(&result).as_str() {
            "after restart" => Ok(()),
            other => Err(format!("unexpected answer {other:?}")),
        }
    })?;
    // The first reverse server is still the one serving: it recovered by itself.
    if let Some(line) = world
        .reverse
        .output()
        .iter()
        .find(|l| l.contains("panicked"))
    {
        return Err(format!("the reverse server panicked: {line}"));
    }
    Ok(())
}

/// Waits until `cond` holds for pool `name`'s members.
async fn wait_pool(
    url: &str,
    name: &str,
    what: &str,
    cond: impl Fn(&[Value]) -> bool,
) -> Result<Vec<Value>, String> {
    let start = Instant::now();
    loop {
        let members = procs::pool_members(url, Some(name)).await?;
        if cond(&members) {
            return Ok(members);
        }
        if start.elapsed() > START {
            return Err(format!(
                "pool {name}: {what} not reached in {START:?}: {members:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stops reverse servers with SIGTERM (they deregister) and waits until their pool is empty.
fn stop_pool(world: &World, name: &str, servers: &mut [Proc]) -> Result<(), String> {
    for s in servers.iter_mut() {
        s.terminate(Duration::from_secs(10));
    }
    world
        .rt
        .block_on(wait_pool(&world.url, name, "empty", |m| m.is_empty()))
        .map(|_| ())
}

fn named_servers(world: &World) -> Result<(), String> {
    let mut both = [
        start_reverse(&world.url, &["--name", "alpha", "--test-tools"])?,
        start_reverse(&world.url, &["--name", "beta", "--test-tools"])?,
    ];
    let result = (|| {
        world.rt.block_on(async {
            wait_pool(&world.url, "alpha", "a member", |m| m.len() == 1).await?;
            wait_pool(&world.url, "beta", "a member", |m| m.len() == 1).await?;
            Ok::<_, String>(())
        })?;
        // A call by name reaches that server's process and no other: its `sleep` tool logs
        // the call's own number of seconds.
        for (i, name) in ["alpha", "beta"].into_iter().enumerate() {
            let endpoint = format!("{}/servers/{name}/message", world.url);
            let seconds = 0.31 + 0.01 * i as f64;
            // The log line ends with the field's value (possibly after colour codes).
            let mark = format!("{seconds}");
            let call = world.rt.spawn(async move {
                let client = Client::connect(&endpoint).map_err(|e| e.to_string())?;
                client
                    .call_tool("sleep", json!({"seconds": seconds}))
                    .await
                    .map_err(|e| format!("sleep on {name}: {e}"))
            });
            let started =
                |l: &str| l.contains("sleep tool started") && l.trim_end().ends_with(&mark);
            both[i].wait_for_line(START, |l| started(l).then_some(()))?;
            if both[1 - i].output().iter().any(|l| started(l)) {
                return Err(format!("the call to {name} ran on the other server"));
            }
            world.rt.block_on(call).map_err(|e| e.to_string())??;
        }
        // Both by name over /message and over /mcp; the default pool is someone else.
        world.rt.block_on(async {
            for name in ["alpha", "beta"] {
                for path in ["message", "mcp"] {
                    let client = Client::connect(&format!("{}/servers/{name}/{path}", world.url))
                        .map_err(|e| e.to_string())?;
                    client.initialize().await.map_err(|e| e.to_string())?;
                    let text = format!("to {name} over /{path}");
                    let r = client
                        .call_tool("echo", json!({"text": text}))
                        .await
                        .map_err(|e| format!("{name} /{path}: {e}"))?;
                    if text_of(&r) != text {
                        return Err(format!("{name} /{path} answered {:?}", text_of(&r)));
                    }
                }
            }
            let client = Client::connect(&format!("{}/servers/gamma/message", world.url))
                .map_err(|e| e.to_string())?;
            match client.call_tool("echo", json!({"text": "x"})).await {
                Err(e) if e.to_string().contains("gamma") => Ok(()),
                other => Err(format!("an absent pool answered {other:?}")),
            }
        })
    })();
    stop_pool(world, "alpha", &mut both[..1])?;
    stop_pool(world, "beta", &mut both[1..])?;
    result
}

/// One call's outcome in the failover load: when it started and whether it was right.
struct Outcome {
    started: Instant,
    ok: bool,
    detail: String,
}

fn pool_failover(world: &World) -> Result<(), String> {
    let mut first = start_reverse(&world.url, &["--name", "pool"])?;
    let res = world
        .rt
        .block_on(wait_pool(&world.url, "pool", "first member polling", |m| {
            m.len() == 1 && m[0]["polls_open"].as_u64() > Some(0)
        }));
    if let Err(e) = res {
        stop_pool(world, "pool", std::slice::from_mut(&mut first))?;
        return Err(e);
    }
    let second = start_reverse(&world.url, &["--name", "pool"])?;
    let mut procs = vec![first, second];
    let result = failover_load(world, &mut procs);
    procs[0].kill(); // killed by the scenario, unless it failed first
    stop_pool(world, "pool", &mut procs[1..])?;
    result
}

fn failover_load(world: &World, procs: &mut [Proc]) -> Result<(), String> {
    const SESSIONLESS: usize = 8;
    const PINNED: usize = 4;
    let url = world.url.clone();
    world
        .rt
        .block_on(wait_pool(&url, "pool", "two members polling", |m| {
            m.len() == 2 && m.iter().all(|m| m["polls_open"].as_u64() > Some(0))
        }))?;
    let message = format!("{url}/servers/pool/message");
    let mcp = format!("{url}/servers/pool/mcp");
    // Pinned clients, until both members have some (each new session goes to the member with
    // fewer outstanding requests, so they spread).
    let pinned: Vec<Arc<Client>> = world.rt.block_on(async {
        let mut v = Vec::new();
        while v.len() < PINNED
            || procs::pool_members(&url, Some("pool"))
                .await?
                .iter()
                .any(|m| m["client_sessions"] == 0)
        {
            if v.len() >= 3 * PINNED {
                return Err("pinned sessions do not spread over the two members".to_owned());
            }
            let c = Client::connect(&mcp).map_err(|e| e.to_string())?;
            c.initialize().await.map_err(|e| e.to_string())?;
            v.push(Arc::new(c));
        }
        Ok::<_, String>(v)
    })?;

    let stop = Arc::new(AtomicBool::new(false));
    let sessionless: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let mut tasks = Vec::new();
    for w in 0..SESSIONLESS {
        let (stop, log, endpoint) = (stop.clone(), sessionless.clone(), message.clone());
        tasks.push(world.rt.spawn(async move {
            let client = Client::connect(&endpoint).map_err(|e| e.to_string())?;
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let text = format!("w{w} call {n}");
                let started = Instant::now();
                let (ok, detail) = match client.call_tool("echo", json!({"text": text})).await {
                    Ok(r) if text_of(&r) == text => (true, String::new()),
                    Ok(r) => (false, format!("asked {text:?}, got {:?}", text_of(&r))),
                    Err(e) => (false, e.to_string()),
                };
                log.lock().unwrap().push(Outcome {
                    started,
                    ok,
                    detail,
                });
            }
            Ok::<_, String>(())
        }));
    }
    // Each pinned client calls until stopped; on 404 (SessionExpired) it initializes again.
    let pinned_tasks: Vec<_> = pinned
        .into_iter()
        .enumerate()
        .map(|(p, client)| world.rt.spawn(pinned_loop(p, client, stop.clone())))
        .collect();

    // Load runs; then the member taking the sessionless traffic dies.
    let done = |n: usize| {
        let log = sessionless.clone();
        move || log.lock().unwrap().len() >= n
    };
    wait_for(Duration::from_secs(30), done(200))?;
    let members = world.rt.block_on(procs::pool_members(&url, Some("pool")))?;
    let Some(v) = members.iter().position(|m| m["sticky"] == true) else {
        return Err(format!("no sticky member under load: {members:?}"));
    };
    let victim = members[v]["member"].clone();
    let on_victim = members[v]["client_sessions"].as_u64().unwrap_or(0) as usize;
    procs.swap(0, v); // procs are in registration order, as members are
    let killed_at = Instant::now();
    procs[0].kill();
    let noticed = world.rt.block_on(async {
        let victim = victim.clone();
        wait_pool(
            &url,
            "pool",
            "the killed member suspect or gone",
            move |m| {
                !m.iter()
                    .any(|m| m["member"] == victim && m["suspect"] == false)
            },
        )
        .await?;
        let noticed = Instant::now();
        wait_pool(&url, "pool", "the killed member removed", |m| m.len() == 1).await?;
        Ok::<_, String>(noticed)
    })?;
    let removed_at = Instant::now();
    // More load on the survivor after the failover, then stop.
    let count = sessionless.lock().unwrap().len();
    wait_for(Duration::from_secs(30), done(count + 200))?;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        world.rt.block_on(t).map_err(|e| e.to_string())??;
    }
    let mut report = Vec::new();
    let mut expired_clients = 0;
    for t in pinned_tasks {
        let (expired, ok_after, failures) = world.rt.block_on(t).map_err(|e| e.to_string())?;
        if ok_after == 0 {
            return Err("a pinned client made no successful call after the failover".into());
        }
        // A client on the killed member may lose the one call in flight when it died.
        let allowed = usize::from(expired > 0);
        if failures.len() > allowed {
            return Err(format!(
                "a pinned client failed {} calls: {failures:?}",
                failures.len()
            ));
        }
        expired_clients += usize::from(expired > 0);
        report.push(ok_after);
    }
    if expired_clients != on_victim {
        return Err(format!(
            "{on_victim} sessions were pinned to the killed member, but {expired_clients} \
             clients got 404"
        ));
    }
    let log = sessionless.lock().unwrap();
    let after: Vec<&Outcome> = log.iter().filter(|o| o.started >= noticed).collect();
    let bad_after: Vec<&String> = after.iter().filter(|o| !o.ok).map(|o| &o.detail).collect();
    let bad_before = log.iter().filter(|o| o.started < noticed && !o.ok).count();
    println!(
        "     noticed {:.0} ms after the kill, removed after {:.1} s; sessionless calls: {} \
         after the failover, all answered right; {bad_before} failed in flight before; \
         {expired_clients} of {} pinned clients got 404 and re-initialized; pinned calls after \
         the failover: {report:?}",
        noticed.duration_since(killed_at).as_secs_f64() * 1000.0,
        removed_at.duration_since(killed_at).as_secs_f64(),
        after.len(),
        report.len(),
    );
    if !bad_after.is_empty() {
        return Err(format!(
            "{} of {} sessionless calls failed after the failover; first: {}",
            bad_after.len(),
            after.len(),
            bad_after[0]
        ));
    }
    if after.is_empty() {
        return Err("no sessionless call ran after the failover".into());
    }
    Ok(())
}

/// A pinned client's load: echo calls until `stop`; on 404 it initializes again. Returns how
/// many 404s it got, its successful calls since the last one, and its failures.
async fn pinned_loop(
    p: usize,
    client: Arc<Client>,
    stop: Arc<AtomicBool>,
) -> (u32, u32, Vec<String>) {
    let (mut expired, mut ok_after, mut failures) = (0u32, 0u32, Vec::new());
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let text = format!("p{p} call {n}");
        match client.call_tool("echo", json!({"text": text})).await {
            Ok(r) if text_of(&r) == text => ok_after += 1,
            Ok(r) => failures.push(format!("asked {text:?}, got {:?}", text_of(&r))),
            Err(ClientError::SessionExpired) => {
                expired += 1;
                ok_after = 0;
                if let Err(e) = client.initialize().await {
                    failures.push(format!("re-initialize: {e}"));
                }
            }
            // In flight on the killed member: fails when its death is declared.
            Err(e) => failures.push(e.to_string()),
        }
    }
    (expired, ok_after, failures)
}

/// Waits until `cond` holds, or fails after `deadline`.
fn wait_for(deadline: Duration, cond: impl Fn() -> bool) -> Result<(), String> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > deadline {
            return Err(format!("condition not reached in {deadline:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}
