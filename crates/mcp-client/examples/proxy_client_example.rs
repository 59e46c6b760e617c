//! The seed's `proxy_client_example`: connects to a proxy, runs six steps and prints what the
//! seed's walkthrough shows. Exits non-zero on any failure.
//!
//! ```text
//! cargo run -p mcp-client --example proxy_client_example -- http://localhost:9000
//! ```

use std::process::ExitCode;

use mcp_client::{text_of, Client};
use serde_json::json;

fn info(line: &str) {
    println!("{}", format!("[INFO] {line}").trim_end());
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://localhost:9000".to_owned());
    info("=== MCP Proxy Client Example ===");
    info(&format!("Proxy URL: {url}"));
    match run(&url).await {
        Ok(()) => {
            info("");
            info("=== All tests completed successfully! ===");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("[ERROR] {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::connect(url)?;

    info("");
    info("1. Initializing connection...");
    let init = client.initialize().await?;
    info("Initialization successful!");
    info(&format!(
        "Server: {} v{}",
        init.server_info.name, init.server_info.version
    ));

    info("");
    info("2. Listing available tools...");
    let tools = client.list_tools().await?;
    info("Available tools:");
    for tool in &tools {
        info(&format!(
            "  - {}: {}",
            tool.name,
            tool.description.as_deref().unwrap_or("")
        ));
    }

    let steps = [
        ("3. Calling 'get_time' tool...", "get_time", json!({})),
        (
            "4. Calling 'calculator' tool (add 15 + 27)...",
            "calculator",
            json!({"operation": "add", "a": 15, "b": 27}),
        ),
        (
            "5. Calling 'echo' tool...",
            "echo",
            json!({"text": "Hello from reverse proxy!", "uppercase": true}),
        ),
    ];
    for (title, name, args) in steps {
        info("");
        info(title);
        let result = client.call_tool(name, args).await?;
        if result.is_error() {
            return Err(format!("tool {name} failed: {}", text_of(&result)).into());
        }
        info(&format!("Result: {}", text_of(&result)));
    }

    info("");
    info("6. Sending ping...");
    client.ping().await?;
    info("Ping successful!");
    Ok(())
}
