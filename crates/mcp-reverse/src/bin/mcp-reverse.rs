//! `mcp-reverse`: publish any MCP server through the reverse proxy with one command.
//!
//! ```text
//! mcp-reverse --proxy http://proxy:9000 --name files -- npx -y @modelcontextprotocol/server-filesystem /srv
//! mcp-reverse --proxy http://proxy:9000 --upstream http://127.0.0.1:8000/mcp
//! ```

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use mcp_reverse::bridge::{
    SessionMode, StdioBridge, StdioConfig, UpstreamBridge, UpstreamConfig, TOKEN_ENV,
};
use mcp_reverse::{Configuration, ReverseClient, Transport};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// The allocator of every binary and example here (docs/performance.md: glibc malloc cost
/// about a sixth of the CPU per call).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Publish an MCP server through an MCP reverse proxy, from behind NAT or a firewall.
///
/// The server is either a program speaking MCP over stdio (give it after `--`, as you would
/// give it to an MCP client) or a local server speaking Streamable HTTP (`--upstream`).
/// mcp-reverse connects out to the proxy, registers under `--name`, and serves the proxy's
/// clients until stopped (Ctrl-C or SIGTERM: requests in flight are finished, the program is
/// stopped, the registration is removed).
///
/// Clients reach it at `PROXY/servers/NAME/mcp` (or `PROXY/mcp` without `--name`).
#[derive(Debug, Parser)]
#[command(name = "mcp-reverse", version, verbatim_doc_comment)]
#[command(after_help = "\
Examples:
  mcp-reverse --proxy http://proxy.example.com:9000 --name everything -- npx -y @modelcontextprotocol/server-everything
  mcp-reverse --proxy http://proxy.example.com:9000 --session-mode per-client -- python my_server.py
  mcp-reverse --proxy http://proxy.example.com:9000 --upstream http://127.0.0.1:8000/mcp

Logs go to stderr (RUST_LOG=debug for more); the program's own stderr is logged there too.")]
struct Cli {
    /// The proxy's base URL.
    #[arg(long, env = "MCP_REVERSE_PROXY", value_name = "URL")]
    proxy: String,

    /// Pool name to register under ([A-Za-z0-9._-], at most 64); absent: the default pool.
    #[arg(long, env = "MCP_REVERSE_NAME")]
    name: Option<String>,

    /// Server token for the proxy (sent as Authorization: Bearer). Never passed on to the
    /// program's environment.
    #[arg(
        long,
        env = TOKEN_ENV,
        hide_env_values = true,
        value_name = "T"
    )]
    token: Option<String>,

    /// PEM file of the CA (or self-signed certificate) to trust for an https:// proxy, besides
    /// the built-in public roots: for private deployments.
    #[arg(long, env = "MCP_REVERSE_CA_CERT", value_name = "PATH")]
    ca_cert: Option<std::path::PathBuf>,

    /// PEM file of a CA to trust for an https:// --upstream, besides the public roots.
    #[arg(
        long,
        env = "MCP_REVERSE_UPSTREAM_CA_CERT",
        value_name = "PATH",
        requires = "upstream"
    )]
    upstream_ca_cert: Option<std::path::PathBuf>,

    /// A local Streamable HTTP MCP endpoint to publish, instead of a command.
    #[arg(long, value_name = "URL", conflicts_with_all = ["command", "session_mode"])]
    upstream: Option<String>,

    /// How client sessions share the program: `shared` runs one process for everyone (one
    /// `initialize`, the first client's; its state is shared by all clients); `per-client`
    /// runs one process per client session, stopped when the session ends.
    #[arg(
        long,
        value_enum,
        default_value = "shared",
        env = "MCP_REVERSE_SESSION_MODE"
    )]
    session_mode: Mode,

    /// In per-client mode, the most processes alive at once.
    #[arg(long, default_value_t = 64, value_name = "N")]
    max_children: usize,

    /// Seconds a stopping program gets after its stdin closes, and again after SIGTERM.
    #[arg(long, default_value_t = 5.0, value_name = "S")]
    stop_grace: f64,

    /// Polls kept open at the proxy (its liveness signal, and how many requests can start at once).
    #[arg(long, default_value_t = 4, value_name = "N")]
    held_polls: u32,

    /// Most requests taken in one poll answer (1: one per answer; the proxy grants at most 64).
    #[arg(long, default_value_t = 16, value_name = "N")]
    poll_items: u32,

    /// How items and answers travel: `ws` (one WebSocket), `poll` (long polling), or `auto`
    /// (the WebSocket, falling back to long polling where it is refused).
    #[arg(
        long,
        value_enum,
        default_value = "auto",
        env = "MCP_REVERSE_TRANSPORT"
    )]
    transport: Transport,

    /// Seconds between pings on the WebSocket (at most 30: below nginx's default 60 s timeout).
    #[arg(long, default_value_t = 20, value_name = "S", value_parser = clap::value_parser!(u64).range(1..=30))]
    ping_interval: u64,

    /// Seconds the proxy may hold each poll.
    #[arg(long, default_value_t = 30, value_name = "S")]
    poll_timeout: u64,

    /// The longest pause, in seconds, between retries to reach the proxy.
    #[arg(long, default_value_t = 5, value_name = "S")]
    retry_delay: u64,

    /// Seconds a shutdown waits for requests in flight.
    #[arg(long, default_value_t = 10.0, value_name = "S")]
    shutdown_grace: f64,

    /// The MCP server program and its arguments (after `--`).
    #[arg(
        last = true,
        value_name = "COMMAND",
        required_unless_present = "upstream"
    )]
    command: Vec<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    Shared,
    PerClient,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), mcp_reverse::Error> {
    let seconds = |s: f64, what: &str| {
        Duration::try_from_secs_f64(s).map_err(|_| {
            mcp_reverse::Error::InvalidConfig(format!("{what} must be a duration in seconds"))
        })
    };
    let mut config = Configuration::new(&cli.proxy)
        .with_held_polls(cli.held_polls)
        .with_poll_items(cli.poll_items)
        .with_transport(cli.transport);
    config.ping_interval = Duration::from_secs(cli.ping_interval);
    config.server_name = cli.name.clone();
    config.auth_token = cli.token.clone();
    config.poll_timeout_seconds = cli.poll_timeout;
    config.retry_delay_seconds = cli.retry_delay;
    config.shutdown_grace = seconds(cli.shutdown_grace, "--shutdown-grace")?;
    let read_pem = |path: &std::path::Path| {
        std::fs::read_to_string(path).map_err(|e| {
            mcp_reverse::Error::InvalidConfig(format!("cannot read {}: {e}", path.display()))
        })
    };
    if let Some(path) = &cli.ca_cert {
        config.ca_cert_pem = Some(read_pem(path)?);
    }

    let stop = CancellationToken::new();
    tokio::spawn(cancel_on_signal(stop.clone()));

    if let Some(url) = &cli.upstream {
        let mut upstream = UpstreamConfig::new(url);
        if let Some(path) = &cli.upstream_ca_cert {
            upstream.ca_cert_pem = Some(read_pem(path)?);
        }
        let bridge = UpstreamBridge::new(upstream)?;
        info!(upstream = %url, "publishing a Streamable HTTP MCP server");
        return serve(ReverseClient::with_service(bridge, config)?, stop).await;
    }

    let (program, args) = cli.command.split_first().expect("clap requires a command");
    let mut stdio =
        StdioConfig::new(program, args.iter().cloned()).with_mode(match cli.session_mode {
            Mode::Shared => SessionMode::Shared,
            Mode::PerClient => SessionMode::PerClient,
        });
    stdio.max_children = cli.max_children;
    stdio.stop_grace = seconds(cli.stop_grace, "--stop-grace")?;
    // The program starts before registering: a command that cannot run fails here, at once.
    let bridge = StdioBridge::start(stdio).await?;
    let served = match ReverseClient::with_service(bridge.clone(), config) {
        Ok(reverse) => serve(reverse, stop).await,
        Err(e) => Err(e),
    };
    info!("stopping the MCP server program");
    bridge.shutdown().await;
    served
}

/// Serves until `stop`, then shuts the reverse client down gracefully.
async fn serve(reverse: ReverseClient, stop: CancellationToken) -> Result<(), mcp_reverse::Error> {
    let shutdown = reverse.shutdown_token();
    let mut task = tokio::spawn(async move { reverse.run().await });
    let ended = tokio::select! {
        _ = stop.cancelled() => None,
        // It ends by itself only on a fatal error (the proxy refused the registration).
        ended = &mut task => Some(ended),
    };
    shutdown.cancel();
    let ended = match ended {
        Some(ended) => ended,
        None => task.await,
    };
    ended.unwrap_or(Ok(()))
}

async fn cancel_on_signal(stop: CancellationToken) {
    mcp_reverse::shutdown_signal().await;
    info!("shutting down");
    stop.cancel();
}
