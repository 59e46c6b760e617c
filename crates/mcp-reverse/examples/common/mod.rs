//! What the reverse-mode examples share: their proxy options and the serve-until-signal `main`.

use clap::Args;
use mcp_reverse::{Configuration, ReverseClient, Transport};
use mcp_server::Server;

/// How an example reaches the proxy.
#[derive(Args, Debug)]
pub(crate) struct ProxyArgs {
    /// The proxy's base URL.
    #[arg(default_value = "http://localhost:9000")]
    pub(crate) proxy_url: String,
    /// The pool to join (default: the proxy's default pool).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Bearer token for the proxy.
    #[arg(long, env = "MCP_REVERSE_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Polls to keep open.
    #[arg(long, default_value_t = 4)]
    pub(crate) polls: u32,
    /// How items and answers travel: ws, poll, or auto (ws, falling back to poll).
    #[arg(
        long,
        value_enum,
        default_value = "auto",
        env = "MCP_REVERSE_TRANSPORT"
    )]
    pub(crate) transport: Transport,
}

/// Logs to stderr (RUST_LOG, default info), then serves `server` through the proxy until
/// Ctrl-C or SIGTERM, announcing itself as `label`.
pub(crate) async fn serve(label: &str, server: Server, args: ProxyArgs) -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut config = Configuration::new(&args.proxy_url)
        .with_held_polls(args.polls)
        .with_transport(args.transport);
    config.server_name = args.name;
    config.auth_token = args.token;
    let result = match ReverseClient::new(server, config) {
        Ok(reverse) => {
            println!("{label} connecting to {}", args.proxy_url);
            reverse.run_until_signal().await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
