//! The seed's `reverse_server_example`: an MCP server with three tools (`get_time`,
//! `calculator`, `echo`) that listens nowhere and serves through the proxy.
//!
//! ```text
//! cargo run -p mcp-reverse --example reverse_server_example -- http://localhost:9000
//! cargo run -p mcp-reverse --example reverse_server_example -- http://localhost:9000 --name alpha --test-tools
//! ```
//!
//! `--test-tools` adds `sleep` (argument `seconds`), which answers when done: for fault tests.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use mcp_protocol::mcp::tools::CallToolResult;
use mcp_reverse::{Configuration, ReverseClient};
use mcp_server::{tool_builder, Server, ServerConfig, ToolError};
use serde_json::{Map, Value};

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
    /// Also offer `sleep`, for fault tests.
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
    let token = reverse.shutdown_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        token.cancel();
    });
    println!("Reverse MCP server connecting to {}", args.proxy_url);
    match reverse.run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

fn build_server(test_tools: bool) -> Server {
    let server = Server::new(ServerConfig::new("Reverse MCP Server", "1.0.0"));

    server.register_tool(
        tool_builder("get_time")
            .with_description("Get the current system time")
            .build(),
        |_args, _ctx| async move {
            Ok(CallToolResult::text(format!(
                "Current time: {}",
                ctime(SystemTime::now())
            )))
        },
    );

    server.register_tool(
        tool_builder("calculator")
            .with_description("Perform basic arithmetic operations")
            .with_enum_param(
                "operation",
                "Operation to perform",
                ["add", "subtract", "multiply", "divide"],
                true,
            )
            .with_number_param("a", "First operand", true)
            .with_number_param("b", "Second operand", true)
            .build(),
        |args, _ctx| async move {
            calculate(&args).map(|r| CallToolResult::text(format!("Result: {r:.6}")))
        },
    );

    server.register_tool(
        tool_builder("echo")
            .with_description("Echo back the provided text")
            .with_string_param("text", "Text to echo", true)
            .with_boolean_param("uppercase", "Convert to uppercase", false)
            .build(),
        |args, _ctx| async move {
            let text = args.get("text").and_then(Value::as_str).unwrap_or_default();
            let upper = args
                .get("uppercase")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            Ok(CallToolResult::text(if upper {
                text.to_uppercase()
            } else {
                text.to_owned()
            }))
        },
    );

    if test_tools {
        server.register_tool(
            tool_builder("sleep")
                .with_description("Sleep for a number of seconds, then answer (for fault tests)")
                .with_number_param("seconds", "How long to sleep", true)
                .build(),
            |args, ctx| async move {
                let seconds = args.get("seconds").and_then(Value::as_f64).unwrap_or(0.0);
                if !(0.0..=3600.0).contains(&seconds) {
                    return Err(ToolError::new("seconds must be between 0 and 3600"));
                }
                // Fault tests wait for this line to know the call is pending on the server.
                tracing::info!(seconds, "sleep tool started");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs_f64(seconds)) => {
                        Ok(CallToolResult::text(format!("Slept {seconds} seconds")))
                    }
                    _ = ctx.cancelled() => Err(ToolError::new("cancelled")),
                }
            },
        );
    }
    server
}

fn calculate(args: &Map<String, Value>) -> Result<f64, ToolError> {
    let number = |key: &str| {
        args.get(key)
            .and_then(Value::as_f64)
            .ok_or_else(|| ToolError::new(format!("'{key}' must be a number")))
    };
    let (a, b) = (number("a")?, number("b")?);
    match args.get("operation").and_then(Value::as_str) {
        Some("add") => Ok(a + b),
        Some("subtract") => Ok(a - b),
        Some("multiply") => Ok(a * b),
        Some("divide") if b == 0.0 => Err(ToolError::new("Division by zero")),
        Some("divide") => Ok(a / b),
        other => Err(ToolError::new(format!(
            "Unknown operation {other:?}: use add, subtract, multiply or divide"
        ))),
    }
}

/// C's `ctime` layout (`Tue Nov 11 12:34:56 2025`), in UTC.
fn ctime(now: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {}",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        day,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        year
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctime_matches_c() {
        // 2025-11-11 12:34:56 UTC, the seed's sample output.
        let t = UNIX_EPOCH + Duration::from_secs(1_762_864_496);
        assert_eq!(ctime(t), "Tue Nov 11 12:34:56 2025");
        assert_eq!(ctime(UNIX_EPOCH), "Thu Jan  1 00:00:00 1970");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(ctime(leap), "Tue Feb 29 00:00:00 2000");
    }

    #[test]
    fn calculator_matches_the_seed() {
        let args = |op: &str, a: f64, b: f64| {
            serde_json::json!({"operation": op, "a": a, "b": b})
                .as_object()
                .unwrap()
                .clone()
        };
        assert_eq!(
            format!("{:.6}", calculate(&args("add", 15.0, 27.0)).unwrap()),
            "42.000000"
        );
        assert_eq!(
            calculate(&args("divide", 1.0, 0.0)).unwrap_err().message(),
            "Division by zero"
        );
        assert_eq!(calculate(&args("multiply", 6.0, 7.0)).unwrap(), 42.0);
    }
}
