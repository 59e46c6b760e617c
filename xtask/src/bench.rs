//! `cargo xtask bench`: what the proxy costs against calling the server directly and against
//! generic TCP tunnels, measured in one run on loopback with release builds.
//!
//! Every path serves the same `echo` tool of the same server code; the load generator runs in
//! this process and speaks plain HTTP (no client library in the way), so the rows differ only
//! by the path a call takes.
//!
//! # Layout
//! - this file: the options, the hand-over to a release build, and the run itself.
//! - `load`: the load generator: one path's caller, latency and throughput measurements.
//! - `paths`: the paths beyond the direct server and one proxy: the audit log on, the
//!   cluster and TCP tunnels.
//! - `report`: the table, `target/bench/latest.json`, and `--compare`.
//! - `floor`: the floor rows, a bare relay on the same stack, and their hidden tasks.
//! - `idle`: the idle-scale run and its hidden client task `bench-idle-clients`.

mod floor;
mod idle;
mod load;
mod paths;
mod report;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::procs::{self, listening_url, Proc};
pub(crate) use floor::{relay as floor_relay, reverse as floor_reverse};
pub(crate) use idle::idle_clients;
use idle::idle_scale;
use load::{cpu_seconds, measure_latency, measure_throughput, Caller, Kind, Path_};
use report::{compare, print_table, to_json, Row};

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

/// Every proxy the bench starts: a free loopback port, and no rate limits (the bench measures
/// the path, not the limiter, whose per-caller default of 1000/s would turn the load
/// generator's calls into 429s).
const PROXY_ARGS: &[&str] = &[
    "--listen",
    "127.0.0.1",
    "--port",
    "0",
    "--rate-limit",
    "0",
    "--server-rate-limit",
    "0",
];

/// `cargo xtask bench`'s options.
#[derive(clap::Args)]
pub(crate) struct Options {
    /// Shorter runs (a smoke test of the harness, noisy figures)
    #[arg(long)]
    quick: bool,
    /// Registrations for the idle-scale run (0 skips it)
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    idle: usize,
    /// Print the change against an earlier target/bench/latest.json
    #[arg(long, value_name = "OLD.json")]
    compare: Option<String>,
    /// `cargo install` rathole and bore-cli first, for the tunnel rows
    #[arg(long)]
    install_tunnels: bool,
}

pub(crate) fn run(options: &Options) -> std::process::ExitCode {
    // The load generator is part of every measurement: an unoptimized one (serde_json and
    // hyper at opt-level 0) would cost more than the paths it measures. `cargo xtask` builds
    // in debug, so hand over to an optimized build of this same program.
    if cfg!(debug_assertions) {
        return match procs::cargo_build(&["--release", "-p", "xtask"]) {
            Ok(()) => {
                // The same command line (`bench` and its options), to the release build.
                let status = std::process::Command::new(procs::release_binary("xtask"))
                    .args(std::env::args_os().skip(1))
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
    match bench(options) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn bench(options: &Options) -> Result<(), String> {
    if options.install_tunnels {
        paths::install_tunnels();
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
    let mut proxy =
        Proc::spawn_raised("mcp-proxy", &procs::release_binary("mcp-proxy"), PROXY_ARGS)?;
    let proxy_url = proxy.wait_for_line(START, listening_url)?;
    // One pool per delivery, each with its own reverse client, so each row's reverse CPU is
    // its own: the WebSocket channel, and long polling (several items per poll answer).
    let reverse = |transport: &str| {
        Proc::spawn(
            &format!("reverse_server_example ({transport})"),
            &procs::release_binary("examples/reverse_server_example"),
            &[&proxy_url, "--name", transport, "--transport", transport],
        )
    };
    let (reverse_ws, reverse_poll) = (reverse("ws")?, reverse("poll")?);
    procs::wait_registrations(&proxy_url, 2, START)?;

    let mut paths = vec![Path_ {
        name: "direct /mcp".into(),
        hops: 2,
        kind: Kind::Mcp,
        url: format!("{direct_url}/mcp"),
        cpu_of: None,
    }];
    for (transport, pid) in [("ws", reverse_ws.pid()), ("poll", reverse_poll.pid())] {
        for (route, kind) in [("message", Kind::Message), ("mcp", Kind::Mcp)] {
            paths.push(Path_ {
                name: format!("proxy /{route} ({transport})"),
                hops: 4,
                kind,
                url: format!("{proxy_url}/servers/{transport}/{route}"),
                cpu_of: Some((proxy.pid(), pid)),
            });
        }
    }
    // Right after "proxy /message (ws)" and the others in the table: the same path with the audit log on.
    let _audited = match paths::start_audited(&mut paths) {
        Ok(audited) => Some(audited),
        Err(e) => {
            println!("skipped the audit row: {e}");
            None
        }
    };
    let _floor = match floor::start_floor(&mut paths) {
        Ok(floor) => Some(floor),
        Err(e) => {
            println!("skipped the floor rows: {e}");
            None
        }
    };
    let _tunnels = paths::start_tunnels(&direct_url, &mut paths);
    let _cluster = match paths::start_cluster(&mut paths) {
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
            let mut cpu_us = None;
            for &c in CONCURRENCY {
                let before = path.cpu_of.map(|(p, r)| (cpu_seconds(p), cpu_seconds(r)));
                let (r, calls) = rt
                    .block_on(measure_throughput(caller.clone(), text.clone(), c, window))
                    .map_err(|e| format!("{} {label} x{c}: {e}", path.name))?;
                // CPU per call at 16 callers: process CPU over the throughput window.
                if let (16, Some((p, rv)), Some((Some(p0), Some(r0)))) = (c, path.cpu_of, before) {
                    if let (Some(p1), Some(r1)) = (cpu_seconds(p), cpu_seconds(rv)) {
                        let per_call = |a: f64, b: f64| (b - a) * 1e6 / calls.max(1) as f64;
                        cpu_us = Some((per_call(p0, p1), per_call(r0, r1)));
                    }
                }
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
                cpu_us,
            });
        }
    }
    let _ = proxy.terminate(Duration::from_secs(10));
    let _ = direct.terminate(Duration::from_secs(10));

    let idle = if options.idle > 0 {
        vec![
            idle_scale(options.idle, false)?,
            idle_scale(options.idle, true)?,
        ]
    } else {
        Vec::new()
    };

    print_table(&rows, &idle);
    let report = to_json(&rows, &idle, options);
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Options;
    use crate::{Cli, Task};

    fn options(line: &str) -> Options {
        match Cli::parse_from(line.split(' ')).task {
            Some(Task::Bench(options)) => options,
            _ => panic!("{line} is not bench"),
        }
    }

    #[test]
    fn options_and_their_defaults() {
        let o = options("xtask bench");
        assert!(!o.quick && !o.install_tunnels);
        assert_eq!((o.idle, o.compare), (10_000, None));
        let o = options("xtask bench --quick --idle 0 --compare old.json --install-tunnels");
        assert!(o.quick && o.install_tunnels);
        assert_eq!((o.idle, o.compare.as_deref()), (0, Some("old.json")));
    }
}
