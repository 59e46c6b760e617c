//! The seed's `reverse_server_example`: an MCP server with three tools (`get_time`,
//! `calculator`, `echo`) that listens nowhere and serves through the proxy.
//!
//! ```text
//! cargo run -p mcp-reverse --example reverse_server_example -- http://localhost:9000
//! cargo run -p mcp-reverse --example reverse_server_example -- http://localhost:9000 --name alpha --test-tools
//! ```
//!
//! `--test-tools` adds the test tools of `mcp_server::demo::register_seed_tools`: `sleep` for
//! fault tests, and `progress`, `sample`, `elicit` and `wait_cancel` for talk-back tests.

mod common;

use clap::Parser;
use mcp_server::{demo, Server, ServerConfig};

/// The allocator of every binary and example here (docs/performance.md: glibc malloc cost
/// about a sixth of the CPU per call).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An MCP server with the seed's three tools, served through a reverse proxy.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    proxy: common::ProxyArgs,
    /// Also offer the test tools (`sleep`, `progress`, `sample`, `elicit`, `wait_cancel`).
    #[arg(long)]
    test_tools: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let server = build_server(args.test_tools);
    common::serve("Reverse MCP server", server, args.proxy).await
}

fn build_server(test_tools: bool) -> Server {
    let server = Server::new(ServerConfig::new("Reverse MCP Server", "1.0.0"));
    // The seed's three tools (and the test tools with --test-tools), shared with mcp-server's
    // direct_server example so both serve exactly the same code.
    demo::register_seed_tools(&server, test_tools);
    server
}
