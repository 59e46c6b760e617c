//! A reverse client *process* SIGKILLed on its channel with a call pending: the caller gets
//! the proxy's "server gone" error within the liveness grace, not at the request timeout.

use std::process::Stdio;
use std::time::{Duration, Instant};

use mcp_client::Client;
use serde_json::json;

use crate::common::{Proxy, DEADLINE, LIVENESS_GRACE};
use crate::stdio::fixture_path;

/// What the grace may be exceeded by: the proxy's sweep (a quarter of the grace) and a loaded
/// machine's scheduling.
const MARGIN: Duration = Duration::from_secs(1);

/// Kills a process group when dropped (the test passed or not).
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        let group = format!("-{}", self.0);
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
    }
}

/// Waits until the proxy shows one request handed over to the member (`in_flight`).
async fn wait_in_flight(proxy: &Proxy) {
    let start = Instant::now();
    while proxy.member().await["in_flight"] != 1 {
        assert!(
            start.elapsed() < DEADLINE,
            "the call never reached the server"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_killed_reverse_process_fails_its_pending_call_within_the_grace() {
    let proxy = Proxy::start().await;
    // Its own process group, so that the wrapped program (orphaned by the SIGKILL, and asleep
    // in the pending call) is killed with it at the end.
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-reverse"))
        .args(["--proxy", &proxy.url(), "--retry-delay", "1", "--"])
        .args(["python3", "-u", &fixture_path()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("the command starts");
    let _group = Group(command.id().unwrap());
    proxy.wait_registrations(1).await;
    let start = Instant::now();
    while proxy.delivery().await != "channel" {
        assert!(
            start.elapsed() < DEADLINE,
            "the process never took its channel"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let pending = {
        let url = proxy.url();
        tokio::spawn(async move {
            Client::connect(&url)
                .unwrap()
                .call_tool("slow", json!({"ms": 60_000}))
                .await
        })
    };
    wait_in_flight(&proxy).await;
    assert_eq!(
        proxy.delivery().await,
        "channel",
        "the call went over the channel"
    );

    command.start_kill().expect("SIGKILL sent");
    let killed = Instant::now();
    let outcome = tokio::time::timeout(DEADLINE, pending)
        .await
        .expect("the pending call ended")
        .unwrap();
    let took = killed.elapsed();
    let err = outcome.expect_err("a killed server cannot answer");
    match &err {
        mcp_client::Error::Status {
            status: 502,
            rpc: Some(rpc),
            ..
        } => assert_eq!(rpc.code.0, -32012, "server gone: {err}"),
        other => panic!("expected 502 server gone, got {other}"),
    }
    assert!(
        took < LIVENESS_GRACE + MARGIN,
        "failed {took:?} after the kill; the grace is {LIVENESS_GRACE:?}"
    );
    assert_eq!(
        proxy.registrations().await,
        0,
        "the dead registration is gone"
    );

    command.wait().await.unwrap();
    proxy.stop().await;
}
