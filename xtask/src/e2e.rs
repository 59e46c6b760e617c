//! `cargo xtask e2e`: the seed's "Testing Locally" walkthrough and fault scenarios, with the
//! proxy, reverse servers and clients as real processes on free loopback ports.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_client::{text_of, Client};
use serde_json::json;

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
    let mut world = match timed("start proxy and reverse server", &mut results, || start(rt)) {
        Some(w) => w,
        None => return summary(&results),
    };
    timed(
        "seed walkthrough (proxy_client_example)",
        &mut results,
        || walkthrough(&world),
    );
    timed(
        "200 concurrent calls, each answer matches its question",
        &mut results,
        || concurrent_calls(&world, 200),
    );
    timed(
        "reverse server killed mid-call: client fails fast",
        &mut results,
        || killed_server(&mut world),
    );
    timed(
        "proxy restart: reverse server comes back by itself",
        &mut results,
        || proxy_restart(&mut world),
    );
    summary(&results)
}

fn timed<T>(
    name: &str,
    results: &mut Vec<bool>,
    scenario: impl FnOnce() -> Result<T, String>,
) -> Option<T> {
    let start = Instant::now();
    let outcome = scenario();
    let took = start.elapsed().as_secs_f64();
    match outcome {
        Ok(v) => {
            println!("PASS {name} ({took:.2}s)");
            results.push(true);
            Some(v)
        }
        Err(e) => {
            println!("FAIL {name} ({took:.2}s): {e}");
            results.push(false);
            None
        }
    }
}

fn summary(results: &[bool]) -> ExitCode {
    let failed = results.iter().filter(|ok| !**ok).count();
    println!(
        "\n{} scenarios, {} passed, {failed} failed",
        results.len(),
        results.len() - failed
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
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
