//! The seed's three tools (`get_time`, `calculator`, `echo`) served directly over Streamable
//! HTTP, no proxy in the way: the benchmark's direct baseline.
//!
//! ```text
//! cargo run -p mcp-server --example direct_server -- 8080
//! cargo run -p mcp-server --example direct_server -- 0 --test-tools   # any free port
//! ```
//!
//! Prints `listening on http://ADDR` once it accepts connections (the endpoint is `/mcp`);
//! stops gracefully on Ctrl-C or SIGTERM.

use std::process::ExitCode;

use mcp_server::http::{self, HttpConfig};
use mcp_server::{demo, Server, ServerConfig};
use tokio_util::sync::CancellationToken;

/// The allocator of every binary and example here (docs/performance.md: glibc malloc cost
/// about a sixth of the CPU per call).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut port: u16 = 8080;
    let mut test_tools = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--test-tools" => test_tools = true,
            "-h" | "--help" => {
                println!("usage: direct_server [PORT] [--test-tools]");
                return ExitCode::SUCCESS;
            }
            other => match other.parse() {
                Ok(p) => port = p,
                Err(_) => {
                    eprintln!("error: {other:?} is not a port (usage: direct_server [PORT] [--test-tools])");
                    return ExitCode::FAILURE;
                }
            },
        }
    }

    let server = Server::new(ServerConfig::new("Direct MCP Server", "1.0.0"));
    demo::register_seed_tools(&server, test_tools);

    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on port {port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        mcp_protocol::signal::shutdown_signal().await;
        stop.cancel();
    });
    println!("listening on http://{addr}");
    match http::serve(listener, server, HttpConfig::default(), shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
