//! Interop: the official reference server (`@modelcontextprotocol/server-everything`, through
//! npx) published by the stdio bridge and called by our client. Needs node and the npm
//! registry, so it runs on request: `cargo test -p mcp-reverse --test reverse -- --ignored`.

use mcp_client::{text_of, Client};
use mcp_reverse::bridge::{StdioBridge, StdioConfig};
use mcp_reverse::ReverseClient;
use serde_json::json;

use crate::common::{config, Proxy};

#[tokio::test]
#[ignore = "needs npx and the npm registry: cargo test -p mcp-reverse --test reverse -- --ignored"]
async fn the_reference_everything_server_is_published_through_the_proxy() {
    let proxy = Proxy::start().await;
    let everything = StdioConfig::new("npx", ["-y", "@modelcontextprotocol/server-everything"]);
    let bridge = StdioBridge::start(everything).await.unwrap();
    let reverse = ReverseClient::with_service(bridge.clone(), config(&proxy.url()))
        .unwrap()
        .spawn();
    proxy.wait_registrations(1).await;

    let client = Client::connect(&proxy.url()).unwrap();
    let info = client.initialize().await.unwrap();
    assert!(info.server_info.name.contains("everything"), "{info:?}");
    let tools = client.list_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "echo"), "{tools:?}");
    // Clients with the same request ids at once, through one shared process.
    let calls: Vec<_> = (0..10)
        .map(|i| {
            let url = proxy.url();
            tokio::spawn(async move {
                let client = Client::connect(&url).unwrap();
                let answer = client
                    .call_tool("echo", json!({"message": format!("call {i}")}))
                    .await
                    .unwrap();
                (i, text_of(&answer))
            })
        })
        .collect();
    for call in calls {
        let (i, answer) = call.await.unwrap();
        assert_eq!(answer, format!("Echo: call {i}"));
    }
    let long = client
        .call_tool(
            "trigger-long-running-operation",
            json!({"duration": 1, "steps": 2}),
        )
        .await
        .unwrap();
    assert!(text_of(&long).contains("completed"), "{}", text_of(&long));

    reverse.shutdown().await.unwrap();
    bridge.shutdown().await;
    proxy.stop().await;
}
