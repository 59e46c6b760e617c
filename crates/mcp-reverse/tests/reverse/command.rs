//! The `mcp-reverse` command itself: a stdio server published through the proxy, stopped by
//! SIGTERM (its program stopped, its registration removed, exit status 0).

use mcp_client::{text_of, Client};
use serde_json::{json, Value};
use std::process::Stdio;

use crate::common::{Proxy, DEADLINE};
use crate::stdio::{fixture_path, wait_dead};

#[tokio::test]
async fn the_command_publishes_a_stdio_server_and_stops_cleanly_on_sigterm() {
    let proxy = Proxy::start().await;
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-reverse"))
        .args([
            "--proxy",
            &proxy.url(),
            "--name",
            "fixture",
            "--retry-delay",
            "1",
            "--",
        ])
        .args(["python3", "-u", &fixture_path()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // Its log would interleave with the test output; run it by hand to read it.
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the command starts");
    proxy.wait_registrations(1).await;

    let client = Client::connect(&format!("{}/servers/fixture/message", proxy.url())).unwrap();
    assert_eq!(
        client.initialize().await.unwrap().server_info.name,
        "stdio-fixture"
    );
    let answer = client
        .call_tool("echo", json!({"text": "via the command"}))
        .await
        .unwrap();
    assert_eq!(text_of(&answer), "via the command");
    let me: Value = serde_json::from_str(&text_of(
        &client.call_tool("whoami", json!({})).await.unwrap(),
    ))
    .unwrap();

    let pid = command.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(DEADLINE, command.wait())
        .await
        .expect("the command stops")
        .unwrap();
    assert!(status.success(), "{status}");
    wait_dead(me["pid"].as_u64().unwrap()).await;
    assert_eq!(proxy.registrations().await, 0, "deregistered");
    proxy.stop().await;
}

#[tokio::test]
async fn the_wrapped_program_never_sees_the_proxy_token() {
    let proxy = Proxy::start().await;
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-reverse"))
        .args(["--proxy", &proxy.url(), "--retry-delay", "1"])
        .args(["--session-mode", "per-client", "--"])
        .args(["python3", "-u", &fixture_path()])
        // The proxy runs without auth: the token is sent and not checked.
        .env("MCP_REVERSE_TOKEN", "the-proxy-token")
        .env("MCP_REVERSE_TEST_CONTROL", "inherited")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the command starts");
    proxy.wait_registrations(1).await;

    // Every child: the sessionless one (/message) and a client session's own (/mcp).
    for route in ["message", "mcp"] {
        let client = Client::connect(&format!("{}/{route}", proxy.url())).unwrap();
        client.initialize().await.unwrap();
        for (name, expected) in [
            ("MCP_REVERSE_TEST_CONTROL", "set"),
            ("MCP_REVERSE_TOKEN", "unset"),
        ] {
            let answer = client
                .call_tool("env", json!({"name": name}))
                .await
                .unwrap();
            assert_eq!(text_of(&answer), expected, "{name} on /{route}");
        }
    }

    let pid = command.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(DEADLINE, command.wait())
        .await
        .expect("the command stops")
        .unwrap();
    assert!(status.success(), "{status}");
    proxy.stop().await;
}

#[test]
fn help_reads_like_a_manual() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-reverse"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--proxy",
        "--upstream",
        "--session-mode",
        "per-client",
        "Examples:",
    ] {
        assert!(help.contains(needle), "{needle} missing from:\n{help}");
    }
    // A command or --upstream is required, not both.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-reverse"))
        .args(["--proxy", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
