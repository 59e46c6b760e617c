//! The floor rows of `cargo xtask bench`: the least a relay of this shape can cost on this
//! machine, with the proxy's own stack (tokio, hyper through axum, tungstenite) and none of
//! its work. `bench-floor-relay` takes `POST /message`, hands the body over one WebSocket to
//! `bench-floor-reverse` and answers with what comes back; no routing, limits, sessions,
//! metrics or MCP, and the id of a call is a counter. The reverse side reads each request as
//! JSON and writes the echo answer, the least an MCP server must do. `POST /echo` answers the
//! same way directly: the floor of a direct call. Both are hidden xtask tasks, run as their own
//! processes so their CPU is read from /proc like the proxy's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use super::load::{Kind, Path_};
use super::START;
use crate::procs::{listening_url, Proc};

/// The floor's two processes, and their rows.
pub(super) fn start_floor(paths: &mut Vec<Path_>) -> Result<Vec<Proc>, String> {
    let xtask = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut relay = Proc::spawn("floor relay", &xtask, &["bench-floor-relay"])?;
    let url = relay.wait_for_line(START, listening_url)?;
    let mut reverse = Proc::spawn("floor reverse", &xtask, &["bench-floor-reverse", &url])?;
    reverse.wait_for_line(START, |l| l.contains("connected").then_some(()))?;
    paths.push(Path_ {
        name: "floor: bare HTTP echo".into(),
        hops: 2,
        kind: Kind::Message,
        url: format!("{url}/echo"),
        cpu_of: None,
    });
    paths.push(Path_ {
        name: "floor: bare relay (ws)".into(),
        hops: 4,
        kind: Kind::Message,
        url: format!("{url}/message"),
        cpu_of: Some((relay.pid(), reverse.pid())),
    });
    Ok(vec![reverse, relay])
}

/// Calls waiting for their answer, and the way to the reverse side.
#[derive(Clone, Default)]
struct Relay {
    down: Arc<Mutex<Option<mpsc::Sender<Message>>>>,
    waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<Bytes>>>>,
    next: Arc<AtomicU64>,
}

/// The hidden task `bench-floor-relay`: serves until killed.
pub(crate) fn relay() -> std::process::ExitCode {
    run(async {
        let app = Router::new()
            .route(
                "/echo",
                post(|body: Bytes| async move { json_answer(answer(&body)) }),
            )
            .route("/message", post(forward))
            .route("/channel", get(channel))
            .with_state(Relay::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("floor relay listening on http://{}", listener.local_addr()?);
        // TCP_NODELAY on every accepted socket, as the proxy sets it: Nagle's algorithm with
        // delayed ACKs would stall larger answers.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await
    })
}

/// The hidden task `bench-floor-reverse URL`: answers every frame until the relay goes.
pub(crate) fn reverse(url: &str) -> std::process::ExitCode {
    let url = format!("{}/channel", url.replacen("http://", "ws://", 1));
    run(async move {
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
            .await
            .map_err(std::io::Error::other)?;
        println!("floor reverse connected");
        let (mut up, mut down) = ws.split();
        while let Some(Ok(frame)) = down.next().await {
            use tokio_tungstenite::tungstenite::Message as Frame;
            let Frame::Text(text) = frame else { continue };
            let Some((id, body)) = text.as_str().split_once('\n') else {
                continue;
            };
            let reply = format!("{id}\n{}", answer(body.as_bytes()));
            if up.send(Frame::Text(reply.into())).await.is_err() {
                break;
            }
        }
        Ok(())
    })
}

fn run(serve: impl std::future::Future<Output = std::io::Result<()>>) -> std::process::ExitCode {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    match rt.block_on(serve) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floor: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The echo tool's answer to a `tools/call` request, read and written as JSON.
fn answer(request: &[u8]) -> String {
    let request: Value = serde_json::from_slice(request).unwrap_or_default();
    json!({"jsonrpc": "2.0", "id": request["id"], "result": {"content": [
        {"type": "text", "text": request["params"]["arguments"]["text"]}]}})
    .to_string()
}

fn json_answer(body: impl Into<axum::body::Body>) -> Response {
    ([(CONTENT_TYPE, "application/json")], body.into()).into_response()
}

/// A call: over the channel, then its answer back.
async fn forward(State(relay): State<Relay>, body: Bytes) -> Response {
    let id = relay.next.fetch_add(1, Ordering::Relaxed);
    let (done, answer) = oneshot::channel();
    relay.waiting.lock().expect("waiting lock").insert(id, done);
    let down = relay.down.lock().expect("down lock").clone();
    let mut frame = format!("{id}\n");
    frame.push_str(&String::from_utf8_lossy(&body));
    let sent = match down {
        Some(down) => down.send(Message::Text(frame.into())).await.is_ok(),
        None => false,
    };
    if !sent {
        relay.waiting.lock().expect("waiting lock").remove(&id);
        return axum::http::StatusCode::BAD_GATEWAY.into_response();
    }
    match answer.await {
        Ok(bytes) => json_answer(bytes),
        Err(_) => axum::http::StatusCode::BAD_GATEWAY.into_response(),
    }
}

async fn channel(State(relay): State<Relay>, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket: WebSocket| async move {
        let (mut up, mut down) = socket.split();
        let (tx, mut rx) = mpsc::channel::<Message>(256);
        *relay.down.lock().expect("down lock") = Some(tx);
        tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                if up.send(frame).await.is_err() {
                    break;
                }
            }
        });
        while let Some(Ok(Message::Text(text))) = down.next().await {
            let Some((id, body)) = text.as_str().split_once('\n') else {
                continue;
            };
            let Ok(id) = id.parse::<u64>() else { continue };
            if let Some(done) = relay.waiting.lock().expect("waiting lock").remove(&id) {
                let _ = done.send(Bytes::copy_from_slice(body.as_bytes()));
            }
        }
    })
}
