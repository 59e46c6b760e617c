//! The reverse channel from the reverse client's side: served over it, falling back to long
//! polling where the proxy refuses it, reconnecting (not falling back) after a cut, and back
//! on a channel soon after a proxy restart.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcp_client::{text_of, Client};
use mcp_protocol::mcp::tools::CallToolResult;
use mcp_reverse::{ReverseClient, Transport};
use mcp_server::{tool_builder, Server, ServerConfig, ToolError};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::common::{config, Proxy, DEADLINE};

/// Channels the proxy accepted (upgrades answered 101).
const CHANNELS_OPENED: &str =
    "mcp_proxy_request_duration_seconds_count{route=\"/channel\",status=\"101\"}";
/// Answers taken by HTTP (`POST /response` answered 200). A broken channel's unacked answers
/// are posted again under their registration: after a restart the new proxy refuses those.
const ANSWERS_POSTED: &str =
    "mcp_proxy_request_duration_seconds_count{route=\"/response\",status=\"200\"}";
/// Long polls (`GET /poll`), whatever their status.
const POLLS: &str = "mcp_proxy_request_duration_seconds_count{route=\"/poll\",";

/// `echo`, and `gate`, which waits until the test releases it.
fn server(started: Arc<Notify>, release: Arc<Notify>) -> Server {
    let server = Server::new(ServerConfig::new("channel test", "1.0.0"));
    server.register_tool(
        tool_builder("echo")
            .with_string_param("text", "Text to echo", true)
            .build(),
        |args, _ctx| async move {
            Ok(CallToolResult::text(
                args["text"].as_str().unwrap_or_default().to_owned(),
            ))
        },
    );
    server.register_tool(tool_builder("gate").build(), move |_args, _ctx| {
        let (started, release) = (started.clone(), release.clone());
        async move {
            started.notify_one();
            release.notified().await;
            Ok::<_, ToolError>(CallToolResult::text("released"))
        }
    });
    server
}

async fn echo(url: &str, text: &str) -> String {
    let client = Client::connect(url).unwrap();
    let result = client
        .call_tool("echo", json!({"text": text}))
        .await
        .unwrap();
    text_of(&result)
}

/// Waits until the proxy shows the member's delivery as `want`.
async fn wait_delivery(proxy: &Proxy, want: &str) {
    let start = Instant::now();
    while proxy.delivery().await != want {
        assert!(start.elapsed() < DEADLINE, "the member never took {want}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn requests_are_served_over_the_channel() {
    let proxy = Proxy::start().await;
    let config = config(&proxy.url()).with_transport(Transport::Ws);
    let reverse = ReverseClient::new(server(Arc::default(), Arc::default()), config)
        .unwrap()
        .spawn();
    proxy.wait_registrations(1).await;
    wait_delivery(&proxy, "channel").await;
    let client = Arc::new(Client::connect(&proxy.url()).unwrap());
    let calls: Vec<_> = (0..40)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let r = client
                    .call_tool("echo", json!({"text": format!("ws {i}")}))
                    .await;
                (i, text_of(&r.unwrap()))
            })
        })
        .collect();
    for call in calls {
        let (i, text) = call.await.unwrap();
        assert_eq!(text, format!("ws {i}"));
    }
    reverse.shutdown().await.unwrap();
    proxy.stop().await;
}

#[tokio::test]
async fn auto_falls_back_to_long_polling_where_the_channel_is_refused() {
    let proxy = Proxy::start_without_channels().await;
    let reverse = ReverseClient::new(server(Arc::default(), Arc::default()), config(&proxy.url()))
        .unwrap()
        .spawn();
    proxy.wait_registrations(1).await;
    wait_delivery(&proxy, "poll").await;
    assert_eq!(echo(&proxy.url(), "by poll").await, "by poll");
    reverse.shutdown().await.unwrap();
    proxy.stop().await;
}

/// A TCP relay in front of the proxy whose connections the test can cut all at once, as a
/// load balancer's idle or lifetime limit does.
struct Relay {
    addr: std::net::SocketAddr,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Relay {
    async fn start(to: std::net::SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let held = connections.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                held.lock().unwrap().push(task);
            }
        });
        Relay {
            addr,
            connections,
            accept,
        }
    }

    /// Cuts every connection open now (new ones are relayed as before).
    fn cut(&self) {
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

#[tokio::test]
async fn a_cut_channel_reconnects_and_its_handed_over_request_is_still_answered() {
    let proxy = Proxy::start().await;
    let relay = Relay::start(proxy.addr).await;
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let reverse = ReverseClient::new(
        server(started.clone(), release.clone()),
        config(&format!("http://{}", relay.addr)),
    )
    .unwrap()
    .spawn();
    proxy.wait_registrations(1).await;
    wait_delivery(&proxy, "channel").await;
    let pending = {
        let url = proxy.url();
        tokio::spawn(async move {
            Client::connect(&url)
                .unwrap()
                .call_tool("gate", json!({}))
                .await
        })
    };
    tokio::time::timeout(DEADLINE, started.notified())
        .await
        .expect("the gate tool started");
    // The cut: the channel breaks with the request handed over and running.
    relay.cut();
    release.notify_one();
    let answer = pending.await.unwrap().expect("answered after the cut");
    assert_eq!(text_of(&answer), "released");
    assert_eq!(echo(&proxy.url(), "after the cut").await, "after the cut");
    // A new channel at once (within the liveness grace): the same registration, no fallback
    // to polling.
    wait_delivery(&proxy, "channel").await;
    assert_eq!(proxy.registrations().await, 1);
    reverse.shutdown().await.unwrap();
    relay.accept.abort();
    proxy.stop().await;
}

#[tokio::test]
async fn an_answer_finished_after_a_cut_goes_up_the_next_channel() {
    let proxy = Proxy::start().await;
    let relay = Relay::start(proxy.addr).await;
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let reverse = ReverseClient::new(
        server(started.clone(), release.clone()),
        config(&format!("http://{}", relay.addr)),
    )
    .unwrap()
    .spawn();
    proxy.wait_registrations(1).await;
    wait_delivery(&proxy, "channel").await;
    assert_eq!(proxy.metric(CHANNELS_OPENED).await, 1.0);
    // The gate call is the first item: no answer went up before the cut, so none is posted
    // again by HTTP after it (a broken channel's unacked answers are).
    let pending = {
        let url = proxy.url();
        tokio::spawn(async move {
            Client::connect(&url)
                .unwrap()
                .call_tool("gate", json!({}))
                .await
        })
    };
    tokio::time::timeout(DEADLINE, started.notified())
        .await
        .expect("the gate tool started");
    relay.cut();
    // The next channel is open at the proxy...
    let start = Instant::now();
    while proxy.metric(CHANNELS_OPENED).await < 2.0 || proxy.delivery().await != "channel" {
        assert!(start.elapsed() < DEADLINE, "no new channel after the cut");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ... and at the reverse client: an item comes down it and its answer goes up.
    assert_eq!(echo(&proxy.url(), "probe").await, "probe");
    release.notify_one();
    let answer = pending.await.unwrap().expect("answered after the cut");
    assert_eq!(text_of(&answer), "released");
    assert_eq!(
        proxy.metric(ANSWERS_POSTED).await,
        0.0,
        "every answer went up a channel, none by POST /response"
    );
    assert_eq!(proxy.metric(CHANNELS_OPENED).await, 2.0);
    assert_eq!(proxy.registrations().await, 1);
    reverse.shutdown().await.unwrap();
    relay.accept.abort();
    proxy.stop().await;
}

#[tokio::test]
async fn after_a_proxy_restart_the_client_is_back_on_a_channel_within_its_retry_delay() {
    let proxy = Proxy::start().await;
    // `auto`, the default: it could fall back to long polling, and must not.
    let config = config(&proxy.url());
    let retry_delay = Duration::from_secs(config.retry_delay_seconds);
    let reverse = ReverseClient::new(server(Arc::default(), Arc::default()), config)
        .unwrap()
        .spawn();
    proxy.wait_registrations(1).await;
    wait_delivery(&proxy, "channel").await;
    assert_eq!(echo(&proxy.url(), "before").await, "before");

    let proxy = proxy.restart().await;
    let listening = Instant::now();
    // The new proxy knows nothing: the channel's upgrade gets 404 unknown_session, and the
    // client registers again and opens a channel there. Its retries pause at most
    // `retry_delay` while the proxy is down.
    while proxy.registrations().await != 1 || proxy.delivery().await != "channel" {
        assert!(
            listening.elapsed() < DEADLINE,
            "never back on a channel after the restart"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let back = listening.elapsed();
    assert!(
        back < retry_delay + Duration::from_secs(1),
        "back on a channel {back:?} after the restart; the retry delay is {retry_delay:?}"
    );
    assert_eq!(echo(&proxy.url(), "after").await, "after");
    assert_eq!(proxy.delivery().await, "channel");
    assert_eq!(proxy.metric(CHANNELS_OPENED).await, 1.0);
    assert_eq!(
        proxy.metric(POLLS).await,
        0.0,
        "no long poll, not even briefly"
    );
    assert_eq!(
        proxy.metric(ANSWERS_POSTED).await,
        0.0,
        "the answer went up the channel"
    );
    reverse.shutdown().await.unwrap();
    proxy.stop().await;
}
