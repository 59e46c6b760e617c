//! A modern fake server: registers with capabilities, keeps `held_polls` polls open on
//! kept-alive connections and handles requests concurrently. The tool `wait` answers only
//! after the test releases it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::common::{client, register, Proxy};
use super::seed::handle;

/// A running modern fake server.
pub(crate) struct ModernServer {
    /// Its registration's session id (to leave by hand after it stopped polling).
    pub(crate) session: String,
    /// Releases every pending `wait` call.
    pub(crate) release: Arc<Notify>,
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl ModernServer {
    /// Registers in pool `name` and starts `held` poll loops.
    pub(crate) async fn spawn(proxy: &Proxy, name: Option<&str>, held: u32) -> ModernServer {
        let http = client();
        let mut body = json!({"type": "mcp_server",
            "capabilities": {"client_sessions": true, "held_polls": held, "protocol_versions": ["2025-11-25"]}});
        if let Some(n) = name {
            body["name"] = json!(n);
        }
        let session = register(&http, proxy, body).await;
        let release = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for _ in 0..held {
            tasks.spawn(poll_loop(
                http.clone(),
                proxy.url(""),
                session.clone(),
                release.clone(),
                stop.clone(),
            ));
        }
        ModernServer {
            session,
            release,
            stop,
            tasks,
        }
    }

    /// Stops the poll loops (their polls close, as when the process dies).
    pub(crate) async fn stop(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

impl Drop for ModernServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn poll_loop(
    http: reqwest::Client,
    base: String,
    session: String,
    release: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut work = JoinSet::new();
    loop {
        let poll = http
            .get(format!("{base}/poll?session_id={session}&timeout=5"))
            .send();
        let resp = tokio::select! { _ = stop.cancelled() => return, r = poll => r };
        let Ok(resp) = resp else {
            tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(Duration::from_millis(20)) => {} }
            continue;
        };
        match resp.status().as_u16() {
            200 => {}
            204 => continue,
            404 => return,
            _ => continue,
        }
        let item: Value = resp.json().await.unwrap();
        if item.get("kind").is_some() {
            continue;
        }
        // Handle concurrently: the next poll opens at once.
        let (http, base, session, release, stop) = (
            http.clone(),
            base.clone(),
            session.clone(),
            release.clone(),
            stop.clone(),
        );
        work.spawn(async move {
            let request = &item["request"];
            if request["params"]["name"] == "wait" {
                tokio::select! { _ = stop.cancelled() => return, _ = release.notified() => {} }
            }
            let response = handle(request);
            let _ = http
                .post(format!("{base}/response?session_id={session}"))
                .json(&json!({"request_id": item["request_id"], "response": response}))
                .send()
                .await;
        });
    }
}
