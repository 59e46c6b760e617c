//! A hand-written stand-in for the seed's C++ reverse client, behaving as DESIGN.md reads it:
//! one task, registers once and never again, 204 = nothing yet, any other non-200 poll status
//! or a failed `/response` makes it sleep `retry_delay` and go on with the same session,
//! `null` posted after notifications, no kept-alive connections.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What the seed's example server answers; `Value::Null` after a notification (the seed's
/// server treats every `notifications/*` method as one, even with an id).
pub(crate) fn handle(request: &Value) -> Value {
    let method = request["method"].as_str().unwrap_or_default();
    let Some(id) = request.get("id").cloned() else {
        return Value::Null;
    };
    if method.starts_with("notifications/") {
        return Value::Null;
    }
    let result = match method {
        "initialize" => json!({
            "protocolVersion": "2024-11-05",
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "Reverse MCP Server", "version": "1.0.0"}
        }),
        "ping" => json!({}),
        "tools/list" => {
            json!({"tools": [{"name": "echo", "description": "Echo back the provided text"}]})
        }
        "tools/call" if request["params"]["name"] == "echo" => {
            let args = &request["params"]["arguments"];
            let mut text = args["text"].as_str().unwrap_or_default().to_owned();
            if args["uppercase"] == true {
                text = text.to_uppercase();
            }
            json!({"content": [{"type": "text", "text": text}]})
        }
        "tools/call" => {
            return json!({"jsonrpc": "2.0", "id": id,
                "error": {"code": -32602, "message": "Invalid params: unknown tool"}})
        }
        other => {
            return json!({"jsonrpc": "2.0", "id": id,
                "error": {"code": -32601, "message": format!("Method not found: {other}")}})
        }
    };
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// A running seed-like reverse client.
pub(crate) struct SeedServer {
    /// Registrations it made (the seed makes exactly one).
    pub(crate) registrations: Arc<AtomicUsize>,
    /// Its session id, once registered.
    pub(crate) session: Arc<Mutex<Option<String>>>,
    /// Every `/response` status and body it got.
    pub(crate) response_answers: Arc<Mutex<Vec<(u16, Value)>>>,
    /// Requests it handled.
    pub(crate) handled: Arc<AtomicUsize>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl SeedServer {
    /// Starts it against `base` (`http://addr`).
    pub(crate) fn spawn(base: String, retry_delay: Duration) -> SeedServer {
        let registrations = Arc::new(AtomicUsize::new(0));
        let session = Arc::new(Mutex::new(None));
        let response_answers = Arc::new(Mutex::new(Vec::new()));
        let handled = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            base,
            retry_delay,
            registrations.clone(),
            session.clone(),
            response_answers.clone(),
            handled.clone(),
            stop.clone(),
        ));
        SeedServer {
            registrations,
            session,
            response_answers,
            handled,
            stop,
            task: Some(task),
        }
    }

    /// The session id (after registration).
    pub(crate) fn session_id(&self) -> Option<String> {
        self.session.lock().unwrap().clone()
    }

    /// Stops it and waits for its task.
    pub(crate) async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SeedServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn run(
    base: String,
    retry_delay: Duration,
    registrations: Arc<AtomicUsize>,
    session: Arc<Mutex<Option<String>>>,
    answers: Arc<Mutex<Vec<(u16, Value)>>>,
    handled: Arc<AtomicUsize>,
    stop: CancellationToken,
) {
    // The seed does not keep connections alive.
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(35))
        .build()
        .unwrap();
    let body = json!({"type": "mcp_server", "timestamp": 1731328496123456789_i64});
    let id = loop {
        let reg = http.post(format!("{base}/register")).json(&body).send();
        let got = tokio::select! { _ = stop.cancelled() => return, r = reg => r };
        if let Ok(resp) = got {
            if resp.status() == 200 {
                let v: Value = resp.json().await.unwrap();
                break v["session_id"].as_str().unwrap().to_owned();
            }
        }
        tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(retry_delay) => {} }
    };
    registrations.fetch_add(1, Ordering::SeqCst);
    *session.lock().unwrap() = Some(id.clone());

    loop {
        let poll = http.get(format!("{base}/poll?session_id={id}")).send();
        let got = tokio::select! { _ = stop.cancelled() => return, r = poll => r };
        let item: Option<Value> = match got {
            Ok(resp) if resp.status() == 204 => continue,
            Ok(resp) if resp.status() == 200 => resp.json().await.ok(),
            _ => None,
        };
        let Some(item) = item else {
            tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(retry_delay) => {} }
            continue;
        };
        let request = &item["request"];
        assert!(
            request.get("method").is_some(),
            "a poll item without method breaks the seed: {item}"
        );
        let response = handle(request);
        handled.fetch_add(1, Ordering::SeqCst);
        let post = http
            .post(format!("{base}/response?session_id={id}"))
            .json(&json!({"request_id": item["request_id"], "response": response}))
            .send();
        let got = tokio::select! { _ = stop.cancelled() => return, r = post => r };
        let ok = match got {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let v: Value = resp.json().await.unwrap_or(Value::Null);
                answers.lock().unwrap().push((status, v));
                status == 200
            }
            Err(_) => false,
        };
        if !ok {
            tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(retry_delay) => {} }
        }
    }
}
