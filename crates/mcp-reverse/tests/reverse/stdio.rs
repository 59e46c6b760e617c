//! The stdio bridge with real child processes (tests/fixtures/stdio_server.py): published
//! through the proxy, id rewriting under concurrent sessions, per-client mode, crash and
//! restart, shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_client::{text_of, Client};
use mcp_protocol::jsonrpc::{Message, Outcome, Request, RequestId, Response};
use mcp_reverse::bridge::{SessionMode, StdioBridge, StdioConfig};
use mcp_reverse::{ReverseClient, Service};
use mcp_server::Outbound;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::common::{config, Proxy, DEADLINE};

pub(crate) fn fixture_path() -> String {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/stdio_server.py"
    )
    .to_owned()
}

fn fixture(mode: SessionMode) -> StdioConfig {
    let mut c = StdioConfig::new("python3", ["-u".to_owned(), fixture_path()]).with_mode(mode);
    c.stop_grace = Duration::from_secs(2);
    c.max_restart_delay = Duration::from_millis(500);
    c
}

async fn request(
    bridge: &StdioBridge,
    session: Option<&str>,
    id: impl Into<RequestId>,
    method: &str,
    params: Value,
    outbound: Outbound,
) -> Response {
    let message = Message::Request(Request::new(id, method, Some(params)));
    tokio::time::timeout(DEADLINE, bridge.handle(session, message, outbound))
        .await
        .expect("answered in time")
        .expect("a request gets an answer")
}

fn result_text(response: &Response) -> String {
    match &response.outcome {
        Outcome::Result(r) => r["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        Outcome::Error(e) => panic!("error {}: {}", e.code.0, e.message),
    }
}

async fn initialize(bridge: &StdioBridge, session: Option<&str>, client: &str) -> Response {
    let params = json!({
        "protocolVersion": "2025-11-25",
        "capabilities": {"sampling": {}},
        "clientInfo": {"name": client, "version": "1"},
    });
    request(bridge, session, 1, "initialize", params, Outbound::none()).await
}

/// pid, client name and counter of the process serving `session`.
async fn whoami(bridge: &StdioBridge, session: Option<&str>, id: i64) -> Value {
    let params = json!({"name": "whoami", "arguments": {}});
    let answer = request(bridge, session, id, "tools/call", params, Outbound::none()).await;
    serde_json::from_str(&result_text(&answer)).unwrap()
}

fn is_alive(pid: u64) -> bool {
    std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub(crate) async fn wait_dead(pid: u64) {
    let start = Instant::now();
    while is_alive(pid) {
        assert!(start.elapsed() < DEADLINE, "process {pid} still runs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_stdio_server_is_published_through_the_proxy() {
    let proxy = Proxy::start().await;
    let bridge = StdioBridge::start(fixture(SessionMode::Shared))
        .await
        .unwrap();
    let reverse = ReverseClient::with_service(bridge.clone(), config(&proxy.url()))
        .unwrap()
        .spawn();
    proxy.wait_registrations(1).await;

    // A client that never initializes (as sessionless traffic may): the bridge initializes
    // the child itself, which refuses requests before that.
    let bare = Client::connect(&proxy.url()).unwrap();
    let answer = bare
        .call_tool("echo", json!({"text": "no handshake"}))
        .await
        .unwrap();
    assert_eq!(text_of(&answer), "no handshake");

    let client = Client::connect(&proxy.url()).unwrap();
    let info = client.initialize().await.unwrap();
    assert_eq!(info.server_info.name, "stdio-fixture");
    assert_eq!(client.list_tools().await.unwrap().len(), 7);
    client.ping().await.unwrap();

    // Twenty clients, each numbering its requests from 1: the same ids in flight at once.
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let url = proxy.url();
            tokio::spawn(async move {
                let client = Client::connect(&url).unwrap();
                let mut answers = Vec::new();
                for j in 0..3 {
                    let text = format!("client {i} call {j}");
                    let answer = client
                        .call_tool("echo", json!({"text": text}))
                        .await
                        .unwrap();
                    answers.push((text, text_of(&answer)));
                }
                answers
            })
        })
        .collect();
    for call in calls {
        for (asked, got) in call.await.unwrap() {
            assert_eq!(asked, got);
        }
    }

    reverse.shutdown().await.unwrap();
    let pid = whoami(&bridge, None, 99).await["pid"].as_u64().unwrap();
    bridge.shutdown().await;
    wait_dead(pid).await;
    proxy.stop().await;
}

#[tokio::test]
async fn concurrent_sessions_share_one_child_without_colliding() {
    let bridge = StdioBridge::start(fixture(SessionMode::Shared))
        .await
        .unwrap();
    let bridge = Arc::new(bridge);
    let first = initialize(&bridge, Some("s0"), "client-0").await;
    // Later clients get the cached answer under their own id; the child saw one initialize.
    let later = initialize(&bridge, Some("s1"), "client-1").await;
    assert_eq!(later.id, Some(RequestId::from(1)));
    assert_eq!(first.outcome, later.outcome);

    // Eight sessions at once, all with request id 7 and progress token "tok".
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let bridge = bridge.clone();
            tokio::spawn(async move {
                let session = format!("s{i}");
                let (tx, mut rx) = mpsc::unbounded_channel();
                let params = json!({"name": "slow", "arguments": {"ms": 200}, "_meta": {"progressToken": "tok"}});
                let answer =
                    request(&bridge, Some(&session), 7, "tools/call", params, Outbound::channel(tx)).await;
                let mut interim = Vec::new();
                while let Ok(m) = rx.try_recv() {
                    interim.push(m);
                }
                (answer, interim)
            })
        })
        .collect();
    for call in calls {
        let (answer, interim) = call.await.unwrap();
        assert_eq!(answer.id, Some(RequestId::from(7)));
        assert_eq!(result_text(&answer), "slept");
        assert_eq!(interim.len(), 1, "exactly its own progress: {interim:?}");
        let Message::Notification(progress) = &interim[0] else {
            panic!("not a notification: {interim:?}")
        };
        assert_eq!(progress.method, "notifications/progress");
        assert_eq!(progress.params.as_ref().unwrap()["progressToken"], "tok");
    }

    // One process, initialized by the first client, shared by all.
    let a = whoami(&bridge, Some("s0"), 2).await;
    let b = whoami(&bridge, Some("s5"), 2).await;
    assert_eq!(a["pid"], b["pid"]);
    assert_eq!(b["client"], "client-0");

    // A request of the child to a client reaches the client whose call is in flight, and only
    // that client may answer it.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let ask = {
        let bridge = bridge.clone();
        tokio::spawn(async move {
            let params = json!({"name": "ask", "arguments": {"q": "ping?"}});
            request(
                &bridge,
                Some("s3"),
                5,
                "tools/call",
                params,
                Outbound::channel(tx),
            )
            .await
        })
    };
    let asked = tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .unwrap()
        .unwrap();
    let Message::Request(asked) = asked else {
        panic!("expected a request, got {asked:?}")
    };
    assert_eq!(asked.method, "sampling/createMessage");
    let reply = |text: &str| {
        Message::Response(Response::success(
            asked.id.clone(),
            json!({"role": "assistant", "model": "m", "content": {"type": "text", "text": text}}),
        ))
    };
    // Another session's answer with the same id is not taken.
    assert!(bridge
        .handle(Some("s4"), reply("intruder"), Outbound::none())
        .await
        .is_none());
    assert!(bridge
        .handle(Some("s3"), reply("pong"), Outbound::none())
        .await
        .is_none());
    assert_eq!(result_text(&ask.await.unwrap()), "pong");

    bridge.shutdown().await;
}

#[tokio::test]
async fn per_client_mode_runs_one_child_per_session() {
    let bridge = StdioBridge::start(fixture(SessionMode::PerClient))
        .await
        .unwrap();
    initialize(&bridge, Some("alice"), "alice-client").await;
    initialize(&bridge, Some("bob"), "bob-client").await;
    let a = whoami(&bridge, Some("alice"), 2).await;
    let b = whoami(&bridge, Some("bob"), 2).await;
    assert_ne!(a["pid"], b["pid"], "one process each");
    assert_eq!(a["client"], "alice-client", "each initialized its own");
    assert_eq!(b["client"], "bob-client");
    assert_eq!(
        (a["counter"].as_u64(), b["counter"].as_u64()),
        (Some(1), Some(1)),
        "no shared state"
    );
    assert_eq!(whoami(&bridge, Some("alice"), 3).await["counter"], 2);
    // Sessionless traffic has a process of its own too.
    let none = whoami(&bridge, None, 1).await;
    assert_ne!(none["pid"], a["pid"]);
    assert_eq!(bridge.children(), 3);

    // The session ends: its process is stopped, the others run on.
    bridge.close_session("alice");
    wait_dead(a["pid"].as_u64().unwrap()).await;
    assert_eq!(whoami(&bridge, Some("bob"), 3).await["pid"], b["pid"]);
    assert_eq!(bridge.children(), 2);

    bridge.shutdown().await;
    wait_dead(b["pid"].as_u64().unwrap()).await;
    wait_dead(none["pid"].as_u64().unwrap()).await;
}

#[tokio::test]
async fn a_crashed_child_fails_its_requests_at_once_and_is_restarted() {
    let bridge = Arc::new(
        StdioBridge::start(fixture(SessionMode::Shared))
            .await
            .unwrap(),
    );
    initialize(&bridge, Some("s"), "first-client").await;
    let before = whoami(&bridge, Some("s"), 2).await;

    // A ten-second call is pending when the child dies: it fails now, not in ten seconds.
    let started = Instant::now();
    let pending = {
        let bridge = bridge.clone();
        tokio::spawn(async move {
            let params = json!({"name": "slow", "arguments": {"ms": 10_000}});
            request(
                &bridge,
                Some("s"),
                3,
                "tools/call",
                params,
                Outbound::none(),
            )
            .await
        })
    };
    let crash = request(
        &bridge,
        Some("s"),
        4,
        "tools/call",
        json!({"name": "crash"}),
        Outbound::none(),
    )
    .await;
    let pending = pending.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(8), "failed at once");
    for answer in [&crash, &pending] {
        let error = answer.as_error().expect("an error");
        assert_eq!(error.code.0, -32603);
        assert!(error.message.contains("exited"), "{}", error.message);
    }
    assert_eq!(pending.id, Some(RequestId::from(3)), "the client's own id");

    // The new process is initialized again with the first client's parameters.
    let after = whoami(&bridge, Some("s"), 5).await;
    assert_ne!(after["pid"], before["pid"]);
    assert_eq!(after["client"], "first-client");
    bridge.shutdown().await;
}

#[tokio::test]
async fn shutdown_escalates_to_sigkill_for_a_child_that_ignores_sigterm() {
    // Answers every request (so the test knows SIGTERM is ignored by then), then outlives
    // its stdin.
    let script = r#"
import json, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
for line in sys.stdin:
    m = json.loads(line)
    if "id" in m and "method" in m:
        r = {"protocolVersion": "2025-11-25", "capabilities": {}, "serverInfo": {"name": "x", "version": "1"}}
        print(json.dumps({"jsonrpc": "2.0", "id": m["id"], "result": r}), flush=True)
time.sleep(600)
"#;
    let mut config = StdioConfig::new("python3", ["-c", script]);
    config.stop_grace = Duration::from_millis(300);
    let bridge = StdioBridge::start(config).await.unwrap();
    let pid = bridge.child_pid(None).expect("running") as u64;
    request(&bridge, None, 1, "ping", json!({}), Outbound::none()).await;
    let started = Instant::now();
    tokio::time::timeout(DEADLINE, bridge.shutdown())
        .await
        .expect("shutdown ends");
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "two graces first"
    );
    wait_dead(pid).await;
}

#[tokio::test]
async fn a_command_that_cannot_start_is_an_error_at_once() {
    let config = StdioConfig::new("/nonexistent/mcp-server", Vec::<String>::new());
    let err = StdioBridge::start(config).await.err().expect("an error");
    assert!(err.to_string().contains("/nonexistent/mcp-server"), "{err}");
}

#[tokio::test]
async fn per_client_sessions_on_the_proxys_mcp_route_get_a_process_each() {
    let proxy = Proxy::start().await;
    let bridge = StdioBridge::start(fixture(SessionMode::PerClient))
        .await
        .unwrap();
    let reverse = ReverseClient::with_service(bridge.clone(), config(&proxy.url()))
        .unwrap()
        .spawn();
    proxy.wait_registrations(1).await;

    let url = format!("{}/mcp", proxy.url());
    let (a, b) = (
        Client::connect(&url).unwrap(),
        Client::connect(&url).unwrap(),
    );
    a.initialize().await.unwrap();
    b.initialize().await.unwrap();
    let (a_me, b_me) = (mcp_whoami(&a).await, mcp_whoami(&b).await);
    assert_ne!(a_me["pid"], b_me["pid"], "one process per client session");
    assert_eq!(
        mcp_whoami(&a).await["counter"],
        2,
        "each keeps its own state"
    );
    assert_eq!(mcp_whoami(&b).await["counter"], 2);

    reverse.shutdown().await.unwrap();
    bridge.shutdown().await;
    wait_dead(a_me["pid"].as_u64().unwrap()).await;
    wait_dead(b_me["pid"].as_u64().unwrap()).await;
    proxy.stop().await;
}

async fn mcp_whoami(client: &Client) -> Value {
    let answer = client.call_tool("whoami", json!({})).await.unwrap();
    serde_json::from_str(&text_of(&answer)).unwrap()
}

#[tokio::test]
async fn a_child_writing_junk_and_huge_lines_on_stderr_keeps_working() {
    let bridge = StdioBridge::start(fixture(SessionMode::Shared))
        .await
        .unwrap();
    let pid = bridge.child_pid(None).expect("running");
    // Invalid UTF-8 and a 1 MiB line, twice: a reader that gave up on the first would close
    // the pipe, and the child's next write to it would fail (EPIPE), leaving the call unanswered.
    for id in 1..=2 {
        let params = json!({"name": "noise", "arguments": {}});
        let answer = request(&bridge, None, id, "tools/call", params, Outbound::none()).await;
        assert_eq!(result_text(&answer), "noisy");
    }
    let params = json!({"name": "echo", "arguments": {"text": "still here"}});
    let answer = request(&bridge, None, 3, "tools/call", params, Outbound::none()).await;
    assert_eq!(result_text(&answer), "still here");
    assert_eq!(bridge.child_pid(None), Some(pid), "the same process");
    bridge.shutdown().await;
}

#[tokio::test]
async fn a_request_that_comes_after_its_sessions_close_starts_no_child() {
    // Several polls are held at once: `session_closed` may overtake its session's request.
    for mode in [SessionMode::PerClient, SessionMode::Shared] {
        let bridge = StdioBridge::start(fixture(mode)).await.unwrap();
        initialize(&bridge, Some("live"), "live-client").await;
        let live = whoami(&bridge, Some("live"), 2).await;
        bridge.close_session("live");
        // Closed before anything of it arrived (its request overtaken).
        bridge.close_session("late");
        for session in ["late", "live"] {
            let answer = initialize(&bridge, Some(session), "late-client").await;
            let error = answer.as_error().expect("refused");
            assert_eq!(error.code.0, -32001, "{mode:?}: unknown session");
            assert_eq!(answer.id, Some(RequestId::from(1)), "the client's own id");
            let ping = request(
                &bridge,
                Some(session),
                2,
                "ping",
                json!({}),
                Outbound::none(),
            );
            assert_eq!(ping.await.as_error().map(|e| e.code.0), Some(-32001));
        }
        match mode {
            SessionMode::PerClient => {
                wait_dead(live["pid"].as_u64().unwrap()).await;
                assert_eq!(bridge.child_pid(Some("late")), None, "no child started");
                assert_eq!(bridge.children(), 1, "only the sessionless child");
            }
            SessionMode::Shared => assert_eq!(bridge.children(), 1),
        }
        // Other sessions are served as before.
        initialize(&bridge, Some("other"), "other-client").await;
        assert!(whoami(&bridge, Some("other"), 2).await["pid"].is_u64());
        bridge.shutdown().await;
    }
}

#[tokio::test]
async fn registering_again_closes_the_per_client_children_of_the_lost_registration() {
    let mut proxy = Proxy::start().await;
    let mut stdio = fixture(SessionMode::PerClient);
    // One child per client session at most: one left behind would refuse every new session.
    stdio.max_children = 1;
    let bridge = StdioBridge::start(stdio).await.unwrap();
    let reverse = ReverseClient::with_service(bridge.clone(), config(&proxy.url()))
        .unwrap()
        .spawn();
    proxy.wait_registrations(1).await;

    for round in 0..2 {
        let client = Client::connect(&format!("{}/mcp", proxy.url())).unwrap();
        client.initialize().await.unwrap();
        let me = mcp_whoami(&client).await;
        assert_eq!(
            bridge.children(),
            2,
            "round {round}: the sessionless child and this one"
        );

        // The proxy restarts: the registration and its client sessions are gone; the reverse
        // client registers again and the bridge stops the child of the lost session.
        proxy = proxy.restart().await;
        proxy.wait_registrations(1).await;
        wait_dead(me["pid"].as_u64().unwrap()).await;
        let start = Instant::now();
        while bridge.children() != 1 {
            assert!(start.elapsed() < DEADLINE, "round {round}: the child stays");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // A new client session gets a child again (the limit is not used up).
    let client = Client::connect(&format!("{}/mcp", proxy.url())).unwrap();
    client.initialize().await.unwrap();
    assert!(mcp_whoami(&client).await["pid"].is_u64());

    reverse.shutdown().await.unwrap();
    bridge.shutdown().await;
    proxy.stop().await;
}
