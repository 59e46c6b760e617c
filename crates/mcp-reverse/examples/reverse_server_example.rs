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

use clap::Parser;
use mcp_reverse::{Configuration, ReverseClient};
use mcp_server::{demo, Server, ServerConfig};

/// An MCP server with the seed's three tools, served through a reverse proxy.
#[derive(Parser, Debug)]
struct Args {
    /// The proxy's base URL.
    #[arg(default_value = "http://localhost:9000")]
    proxy_url: String,
    /// The pool to join (default: the proxy's default pool).
    #[arg(long)]
    name: Option<String>,
    /// Bearer token for the proxy.
    #[arg(long, env = "MCP_REVERSE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Also offer the test tools (`sleep`, `progress`, `sample`, `elicit`, `wait_cancel`).
    #[arg(long)]
    test_tools: bool,
    /// Polls to keep open.
    #[arg(long, default_value_t = 4)]
    polls: u32,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();

    let server = build_server(args.test_tools);
    let mut config = Configuration::new(&args.proxy_url).with_held_polls(args.polls);
    config.server_name = args.name;
    config.auth_token = args.token;

    let reverse = match ReverseClient::new(server, config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("Reverse MCP server connecting to {}", args.proxy_url);
    match reverse.run_until_signal().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn build_server(test_tools: bool) -> Server {
    let server = Server::new(ServerConfig::new("Reverse MCP Server", "1.0.0"));
    // The seed's three tools (and the test tools with --test-tools), shared with mcp-server's
    // direct_server example so both serve exactly the same code.
    demo::register_seed_tools(&server, test_tools);
    server
}
