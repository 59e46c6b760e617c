//! The load the kill scenario keeps up: workers calling echo with unique texts through nginx,
//! and the log of how every call ended.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcp_client::{text_of, Error as ClientError};
use serde_json::json;

use super::traffic::client;
use super::HUNG;

/// How one call of the load ended.
#[derive(Debug)]
pub(super) enum End {
    /// The right answer.
    Right,
    /// An answer, but not this call's.
    Wrong(String),
    /// An error (the proxy's, nginx's, or a session the proxy forgot).
    Failed(String),
    /// No answer within [`HUNG`].
    Hung,
}

/// One call of the load.
#[derive(Debug)]
pub(super) struct Call {
    pub(super) route: &'static str,
    /// What it asked (its echo text).
    pub(super) text: String,
    pub(super) started: Instant,
    pub(super) ended: Instant,
    pub(super) end: End,
}

pub(super) type Log = Arc<Mutex<Vec<Call>>>;

/// Calls echo through `endpoint` with unique texts until `stop`, logging every call. A
/// Streamable HTTP worker (`session`) initializes first and again after a 404.
pub(super) async fn load_worker(
    route: &'static str,
    endpoint: String,
    w: usize,
    session: bool,
    stop: Arc<AtomicBool>,
    log: Log,
) -> Result<(), String> {
    let client = client(&endpoint)?;
    let mut need_init = session;
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let started = Instant::now();
        let text = format!("{route} worker {w} call {n}");
        let outcome = if need_init {
            tokio::time::timeout(HUNG, client.initialize())
                .await
                .map(|r| r.map(|_| ()))
        } else {
            tokio::time::timeout(HUNG, client.call_tool("echo", json!({ "text": text })))
                .await
                .map(|r| {
                    r.and_then(|result| {
                        let answer = text_of(&result);
                        if answer == text {
                            Ok(())
                        } else {
                            Err(ClientError::InvalidResponse(format!(
                                "WRONG ANSWER: asked {text:?}, got {answer:?}"
                            )))
                        }
                    })
                })
        };
        let end = match outcome {
            Err(_) => End::Hung,
            Ok(Ok(())) => {
                need_init = false;
                End::Right
            }
            Ok(Err(ClientError::InvalidResponse(m))) if m.starts_with("WRONG ANSWER") => {
                End::Wrong(m)
            }
            Ok(Err(e)) => {
                if session && matches!(e, ClientError::SessionExpired) {
                    need_init = true;
                }
                End::Failed(if need_init && !matches!(e, ClientError::SessionExpired) {
                    format!("initialize: {}", describe(&e))
                } else {
                    describe(&e)
                })
            }
        };
        let failed = !matches!(end, End::Right);
        log.lock().expect("log lock").push(Call {
            route,
            text,
            started,
            ended: Instant::now(),
            end,
        });
        if failed {
            // Failures come at once while no server is there: do not spin on them.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// A failed call as the report counts it: the HTTP status and JSON-RPC code when there are
/// some, nginx's own error pages by their title.
pub(super) fn describe(e: &ClientError) -> String {
    match e {
        ClientError::Status {
            status,
            rpc: Some(rpc),
            ..
        } => {
            format!("HTTP {status} JSON-RPC {}: {}", rpc.code, rpc.message)
        }
        ClientError::Status { status, body, .. } if body.contains("<html>") => {
            format!("HTTP {status} from nginx (an HTML error page)")
        }
        other => other.to_string(),
    }
}

/// The start of an error message, to count errors by kind.
pub(super) fn shorten(message: &str) -> String {
    message.chars().take(100).collect()
}
