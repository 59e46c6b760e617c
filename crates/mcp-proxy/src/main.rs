//! `mcp-proxy [PORT]`: runs the public MCP reverse proxy until SIGINT or SIGTERM.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use mcp_proxy::cli::{Cli, LogFormat};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// The allocator: per-call allocations cost a sixth of the proxy's CPU under glibc malloc.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.builtin_args.oauth_hash_password {
        // A users-file line's hash of the password on stdin (never echoed, never logged).
        let mut password = String::new();
        if std::io::stdin().read_line(&mut password).is_err() || password.trim().is_empty() {
            eprintln!("mcp-proxy: --oauth-hash-password reads the password on stdin");
            return ExitCode::from(2);
        }
        let password = password.trim_end_matches(['\n', '\r']);
        println!(
            "{}",
            mcp_proxy::auth::server::login::hash_password(password)
        );
        return ExitCode::SUCCESS;
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Compact => logs.compact().with_ansi(false).init(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }

    let addr = match cli.addr() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("mcp-proxy: {e}");
            return ExitCode::from(2);
        }
    };
    // Tokens and certificate first: a bad file is refused before anything listens.
    let config = match cli.try_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("mcp-proxy: {e}");
            return ExitCode::from(2);
        }
    };
    // A cluster's Redis is joined before anything listens: a proxy that cannot reach it
    // exits with the reason instead of taking traffic it cannot route.
    let state = match mcp_proxy::AppState::connect(config).await {
        Ok(state) => state,
        Err(e) => {
            eprintln!("mcp-proxy: cannot join the cluster: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mcp-proxy: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bound = listener.local_addr().unwrap_or(addr);
    // The e2e harness reads the real port from this line (it matters with port 0).
    let scheme = if state.config().tls.is_some() {
        "https"
    } else {
        "http"
    };
    if let Some(server) = &state.config().auth_server {
        tracing::info!(issuer = %server.issuer(), state = %server.describe_store(), "built-in authorization server on");
    }
    println!("mcp-proxy listening on {scheme}://{bound}");
    let _ = std::io::stdout().flush();
    tracing::info!(%bound, "listening");

    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    match mcp_proxy::serve_with_state(listener, state, shutdown).await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mcp-proxy: server error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Cancels `token` on ctrl-c (SIGINT) or, on Unix, SIGTERM.
async fn cancel_on_signal(token: CancellationToken) {
    mcp_protocol::signal::shutdown_signal().await;
    tracing::info!("signal received");
    token.cancel();
}
