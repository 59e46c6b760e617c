//! `mcp-client`: talk to an MCP server (or the proxy in front of one) from the command line.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use mcp_client::{text_of, Client, ClientOptions, Error, Transport};
use serde_json::Value;

/// Talk to an MCP server, or the proxy in front of one.
///
/// A URL ending in /mcp speaks MCP Streamable HTTP; any other speaks the seed's /message
/// transport (a bare base URL means its /message route). --transport overrides the choice.
///
/// Examples:
///   mcp-client http://localhost:9000 tools
///   mcp-client http://localhost:9000/mcp call echo '{"text":"hi"}'
///   mcp-client http://localhost:9000/servers/alpha/message ping
#[derive(Parser, Debug)]
#[command(version, verbatim_doc_comment)]
struct Cli {
    /// The proxy base URL (its /message route) or a full endpoint URL (/message or /mcp).
    url: String,
    /// What to do.
    #[command(subcommand)]
    command: Command,
    /// Bearer token for the proxy.
    #[arg(long, env = "MCP_CLIENT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM file of the CA (or self-signed certificate) to trust for https://, besides the
    /// built-in public roots: for private deployments.
    #[arg(long, env = "MCP_CLIENT_CA_CERT", value_name = "PATH")]
    ca_cert: Option<std::path::PathBuf>,
    /// Seconds to wait for each answer.
    #[arg(long, default_value_t = 330)]
    timeout: u64,
    /// Print results as JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Which transport to speak; `auto` picks Streamable HTTP for URLs ending in /mcp.
    #[arg(long, value_enum, default_value_t = TransportArg::Auto)]
    transport: TransportArg,
}

/// The `--transport` choices.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum TransportArg {
    /// From the URL.
    Auto,
    /// The seed's POST /message.
    Message,
    /// MCP Streamable HTTP.
    Streamable,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show the server's name, version, protocol version and instructions.
    Info,
    /// List the tools with their descriptions.
    Tools,
    /// Call a tool: `call NAME '{"arg": "value"}'`.
    Call {
        /// The tool's name.
        name: String,
        /// Its arguments as a JSON object.
        #[arg(default_value = "{}")]
        arguments: String,
    },
    /// Check the server answers.
    Ping,
    /// List the resources.
    Resources,
    /// Read a resource by URI.
    Read {
        /// The resource's URI.
        uri: String,
    },
    /// List the prompts.
    Prompts,
    /// Get a prompt: `prompt NAME '{"arg": "value"}'`.
    Prompt {
        /// The prompt's name.
        name: String,
        /// Its arguments as a JSON object of strings.
        #[arg(default_value = "{}")]
        arguments: String,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_object(text: &str) -> Result<Value, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(format!("arguments must be a JSON object, got {text}")),
        Err(e) => Err(format!("arguments are not valid JSON ({e}): {text}")),
    }
}

fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("results serialize")
    );
}

async fn run(cli: Cli) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let options = ClientOptions {
        timeout: Duration::from_secs(cli.timeout),
        token: cli.token.clone(),
        ca_cert: match &cli.ca_cert {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
            ),
            None => None,
        },
        transport: match cli.transport {
            TransportArg::Auto => None,
            TransportArg::Message => Some(Transport::Message),
            TransportArg::Streamable => Some(Transport::Streamable),
        },
        ..ClientOptions::default()
    };
    let client = Client::with_options(&cli.url, options)?;
    let info = client.initialize().await.map_err(explain)?;
    let outcome = command(&cli, &client, info).await;
    // Ending the session is a courtesy to the server; a failure to do so changes nothing here.
    if let Err(e) = client.close().await {
        tracing::debug!("closing the session: {e}");
    }
    outcome
}

async fn command(
    cli: &Cli,
    client: &Client,
    info: mcp_protocol::mcp::lifecycle::InitializeResult,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match &cli.command {
        Command::Info => {
            if cli.json {
                print_json(&info);
            } else {
                println!("{} v{}", info.server_info.name, info.server_info.version);
                println!("protocol {}", info.protocol_version);
                if let Some(text) = &info.instructions {
                    println!("{text}");
                }
            }
        }
        Command::Tools => {
            let tools = client.list_tools().await.map_err(explain)?;
            if cli.json {
                print_json(&tools);
            } else {
                for t in tools {
                    match t.description {
                        Some(d) => println!("{}: {d}", t.name),
                        None => println!("{}", t.name),
                    }
                }
            }
        }
        Command::Call { name, arguments } => {
            let args = parse_object(arguments)?;
            let result = client.call_tool(name, args).await.map_err(explain)?;
            if cli.json {
                print_json(&result);
            } else if result.is_error() {
                eprintln!("tool error: {}", text_of(&result));
            } else {
                println!("{}", text_of(&result));
            }
            if result.is_error() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Ping => {
            client.ping().await.map_err(explain)?;
            println!("pong");
        }
        Command::Resources => {
            let resources = client.list_resources().await.map_err(explain)?;
            if cli.json {
                print_json(&resources);
            } else {
                for r in resources {
                    println!("{} ({})", r.uri, r.name);
                }
            }
        }
        Command::Read { uri } => {
            let result = client.read_resource(uri).await.map_err(explain)?;
            print_json(&result);
        }
        Command::Prompts => {
            let prompts = client.list_prompts().await.map_err(explain)?;
            if cli.json {
                print_json(&prompts);
            } else {
                for p in prompts {
                    match p.description {
                        Some(d) => println!("{}: {d}", p.name),
                        None => println!("{}", p.name),
                    }
                }
            }
        }
        Command::Prompt { name, arguments } => {
            let args = parse_object(arguments)?;
            let result = client.get_prompt(name, args).await.map_err(explain)?;
            print_json(&result);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Adds a hint for the errors people meet first.
fn explain(e: Error) -> Box<dyn std::error::Error> {
    let hint = match &e {
        Error::Transport(t) if t.is_connect() => " (is the proxy running, and is the URL right?)",
        Error::Status { status: 503, .. } => {
            " (no MCP server is registered: start one with its reverse client)"
        }
        _ => "",
    };
    format!("{e}{hint}").into()
}
