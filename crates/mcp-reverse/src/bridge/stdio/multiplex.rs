//! What travels over one child's stdio: clients' request ids and progress tokens rewritten to
//! the bridge's own (unique per slot) and restored on the way back, requests pending on the
//! child, the child's own requests routed to one client, and `initialize` done once per
//! process.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use mcp_protocol::jsonrpc::{
    ErrorObject, Message, Notification, Outcome, Request, RequestId, Response,
};
use mcp_protocol::mcp::methods;
use mcp_server::Outbound;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, oneshot, OnceCell};
use tokio_util::sync::CancellationToken;
use tracing::debug;
use tracing::warn;

use super::supervision::Slot;
use crate::bridge::{
    cancelled_request, default_initialize_params, retarget_cancel, unavailable, with_id,
};

impl Slot {
    pub(super) async fn handle(
        &self,
        session: Option<&str>,
        message: Message,
        outbound: Outbound,
    ) -> Option<Response> {
        match message {
            Message::Request(request) => {
                let id = request.id.clone();
                Some(match self.request(session, request, outbound).await {
                    Ok(response) => response,
                    Err(error) => Response::error(Some(id), error),
                })
            }
            Message::Notification(notification) => {
                if let Err(e) = self.notify(session, notification).await {
                    debug!(slot = %self.label, "notification not delivered: {}", e.message);
                }
                None
            }
            Message::Response(response) => {
                if let Some(generation) = self.current() {
                    generation.reply(session, response);
                }
                None
            }
        }
    }

    async fn request(
        &self,
        session: Option<&str>,
        request: Request,
        outbound: Outbound,
    ) -> Result<Response, ErrorObject> {
        let generation = self.generation().await?;
        if request.method == methods::INITIALIZE {
            let cached = self
                .init
                .lock()
                .expect("init lock")
                .as_ref()
                .map(|(_, r)| r.clone());
            if let Some(cached) = cached {
                return Ok(with_id(cached, request.id));
            }
            let params = request
                .params
                .clone()
                .unwrap_or_else(default_initialize_params);
            let answer = generation.initialize(params).await?;
            return Ok(with_id(answer, request.id));
        }
        generation.initialized().await?;
        generation.call(session, request, outbound).await
    }

    async fn notify(
        &self,
        session: Option<&str>,
        notification: Notification,
    ) -> Result<(), ErrorObject> {
        // The bridge sends the child its own `notifications/initialized`, once per process.
        if notification.method == methods::NOTIFICATION_INITIALIZED {
            return Ok(());
        }
        let generation = self.generation().await?;
        generation.initialized().await?;
        generation.notify(session, notification);
        Ok(())
    }

    /// Shared mode: a client session ended; forget what routes to it.
    pub(super) fn forget_session(&self, session: &str) {
        if let Some(generation) = self.current() {
            generation
                .server_requests
                .lock()
                .expect("server_requests lock")
                .retain(|_, route| route.session.as_deref() != Some(session));
        }
    }

    /// Sends a session message; `false` when there is no session to send it to.
    pub(super) fn to_session(&self, message: &Message) -> bool {
        let Some(sink) = self.sink.get() else {
            return false;
        };
        match &self.session {
            Some(session) => sink(session, message.clone()),
            None => {
                let known: Vec<String> = self
                    .known
                    .lock()
                    .expect("known lock")
                    .iter()
                    .cloned()
                    .collect();
                let mut taken = false;
                for session in &known {
                    taken |= sink(session, message.clone());
                }
                taken
            }
        }
    }
}

/// A request of a client waiting for the child's answer.
pub(super) struct Pending {
    /// The client's own id, restored on the answer.
    pub(super) original: RequestId,
    /// The client's progress token, when the bridge replaced it.
    pub(super) progress_token: Option<Value>,
    pub(super) session: Option<String>,
    pub(super) outbound: Outbound,
    pub(super) answer: oneshot::Sender<Response>,
}

/// Where a request of the child to a client went, so the client's answer can come back.
#[derive(Clone)]
pub(super) struct Route {
    session: Option<String>,
    outbound: Option<Outbound>,
}

/// One running process of a slot.
pub(super) struct Generation {
    pub(super) slot: Arc<Slot>,
    pub(super) number: u32,
    pub(super) pid: Option<u32>,
    /// Lines for the child's stdin; `None` once closed. A std mutex: no await under it.
    pub(super) stdin: Mutex<Option<mpsc::UnboundedSender<Vec<u8>>>>,
    /// Requests in flight by the bridge's id. A std mutex: no await under it.
    pub(super) pending: Mutex<HashMap<u64, Pending>>,
    /// The child's requests to clients by the child's id.
    pub(super) server_requests: Mutex<HashMap<RequestId, Route>>,
    /// This process's `initialize` result.
    pub(super) initialized: OnceCell<Response>,
    /// Cancelled when the process has exited.
    pub(super) alive: CancellationToken,
    pub(super) exit: Mutex<Option<String>>,
}

impl Generation {
    pub(super) fn send(&self, message: &Message) -> bool {
        let mut line = serde_json::to_vec(message).expect("messages serialize");
        line.push(b'\n');
        match &*self.stdin.lock().expect("stdin lock") {
            Some(tx) => tx.send(line).is_ok(),
            None => false,
        }
    }

    /// Sends `initialize` (once per process) and then `notifications/initialized`.
    async fn initialize(&self, params: Value) -> Result<Response, ErrorObject> {
        let answer = self
            .initialized
            .get_or_try_init(|| async {
                let request = Request::new(0, methods::INITIALIZE, Some(params.clone()));
                let answer = self.call(None, request, Outbound::none()).await?;
                if let Outcome::Error(e) = &answer.outcome {
                    // Not cached: the next client tries again.
                    return Err(e.clone());
                }
                let initialized = Notification::new(methods::NOTIFICATION_INITIALIZED, None);
                self.send(&Message::Notification(initialized));
                let mut init = self.slot.init.lock().expect("init lock");
                if init.is_none() {
                    *init = Some((params, answer.clone()));
                }
                Ok(answer)
            })
            .await?;
        Ok(answer.clone())
    }

    /// Makes sure this process is initialized: with the first client's parameters when there
    /// were some (a restarted process), else with the bridge's own.
    async fn initialized(&self) -> Result<(), ErrorObject> {
        if self.initialized.initialized() {
            return Ok(());
        }
        let params = self
            .slot
            .init
            .lock()
            .expect("init lock")
            .as_ref()
            .map(|(p, _)| p.clone());
        debug!(
            slot = %self.slot.label,
            generation = self.number,
            replayed = params.is_some(),
            "initializing the MCP server before its first request"
        );
        self.initialize(params.unwrap_or_else(default_initialize_params))
            .await
            .map(|_| ())
    }

    /// Sends a client's request with the bridge's id and waits for the answer.
    async fn call(
        &self,
        session: Option<&str>,
        mut request: Request,
        outbound: Outbound,
    ) -> Result<Response, ErrorObject> {
        let ours = self.slot.next_id.fetch_add(1, Ordering::Relaxed);
        let original = std::mem::replace(&mut request.id, RequestId::from(ours as i64));
        // Progress tokens come from clients too: two clients may pick the same one.
        let progress_token = request
            .params
            .as_mut()
            .and_then(|p| p.get_mut("_meta"))
            .and_then(|m| m.get_mut("progressToken"))
            .map(|t| std::mem::replace(t, Value::from(ours)));
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending lock").insert(
            ours,
            Pending {
                original: original.clone(),
                progress_token,
                session: session.map(str::to_owned),
                outbound,
                answer: tx,
            },
        );
        // Removes the entry if the caller gives up (the proxy's request ended).
        let _guard = PendingGuard {
            generation: self,
            id: ours,
        };
        if self.alive.is_cancelled() || !self.send(&Message::Request(request)) {
            return Err(self.exit_error());
        }
        match rx.await {
            Ok(mut answer) => {
                answer.id = Some(original);
                Ok(answer)
            }
            Err(_) => Err(self.exit_error()),
        }
    }

    /// Forwards a client's notification; a cancellation names the bridge's id for the request.
    fn notify(&self, session: Option<&str>, mut notification: Notification) {
        if notification.method == methods::NOTIFICATION_CANCELLED {
            let ours = cancelled_request(&notification).and_then(|target| {
                self.pending
                    .lock()
                    .expect("pending lock")
                    .iter()
                    .find(|(_, p)| p.original == target && p.session.as_deref() == session)
                    .map(|(id, _)| *id)
            });
            if !ours.is_some_and(|ours| retarget_cancel(&mut notification, ours)) {
                return; // nothing of this client's is in flight
            }
        }
        self.send(&Message::Notification(notification));
    }

    /// A client answers a request of the child: only the client it went to may.
    fn reply(&self, session: Option<&str>, response: Response) {
        let Some(id) = response.id.clone() else {
            return;
        };
        let mut routes = self.server_requests.lock().expect("server_requests lock");
        match routes.get(&id) {
            Some(route) if route.session.as_deref() == session => {
                routes.remove(&id);
                drop(routes);
                self.send(&Message::Response(response));
            }
            _ => debug!(slot = %self.slot.label, "a reply to no request of this server; dropped"),
        }
    }

    pub(super) async fn read_stdout(self: Arc<Self>, stdout: tokio::process::ChildStdout) {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            // No length limit: the child is the operator's own program, and a tool result of
            // many megabytes is one line.
            match reader.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let text = line.trim_ascii();
                    if text.is_empty() {
                        continue;
                    }
                    match Message::parse(text) {
                        Ok(message) => self.on_child_message(message),
                        Err(e) => warn!(
                            slot = %self.slot.label,
                            "the MCP server wrote something that is not JSON-RPC on stdout ({e}); ignored"
                        ),
                    }
                }
            }
        }
    }

    /// Routes one message of the child.
    fn on_child_message(&self, message: Message) {
        match message {
            Message::Response(response) => {
                let ours = match &response.id {
                    Some(RequestId::Number(n)) => n.as_u64(),
                    _ => None,
                };
                let pending =
                    ours.and_then(|id| self.pending.lock().expect("pending lock").remove(&id));
                match pending {
                    Some(p) => {
                        let _ = p.answer.send(response);
                    }
                    None => debug!(slot = %self.slot.label, "an answer nobody waits for; dropped"),
                }
            }
            Message::Request(request) => self.child_request(request),
            Message::Notification(notification) => self.child_notification(notification),
        }
    }

    /// The latest request in flight: the best guess of whom an untied message is for.
    fn latest(&self) -> Option<(Option<String>, Outbound)> {
        let pending = self.pending.lock().expect("pending lock");
        pending
            .iter()
            .filter(|(_, p)| p.outbound.is_connected())
            .max_by_key(|(id, _)| **id)
            .map(|(_, p)| (p.session.clone(), p.outbound.clone()))
    }

    fn child_request(&self, request: Request) {
        let id = request.id.clone();
        let message = Message::Request(request);
        let route = match self.latest() {
            Some((session, outbound)) if outbound.send(message.clone()) => Some(Route {
                session,
                outbound: Some(outbound),
            }),
            _ if self.slot.session.is_some() && self.slot.to_session(&message) => Some(Route {
                session: self.slot.session.clone(),
                outbound: None,
            }),
            _ => None,
        };
        match route {
            Some(route) => {
                self.server_requests
                    .lock()
                    .expect("server_requests lock")
                    .insert(id, route);
            }
            None => {
                let error = unavailable(
                    "no client can take this request now (no request of a client is in flight)",
                );
                self.send(&Message::Response(Response::error(Some(id), error)));
            }
        }
    }

    fn child_notification(&self, mut notification: Notification) {
        // Progress names the bridge's token: restore the client's and send it to that client.
        if notification.method == methods::NOTIFICATION_PROGRESS {
            let token = notification
                .params
                .as_ref()
                .and_then(|p| p.get("progressToken"))
                .and_then(Value::as_u64);
            let target = token.and_then(|t| {
                let pending = self.pending.lock().expect("pending lock");
                pending
                    .get(&t)
                    .map(|p| (p.progress_token.clone(), p.outbound.clone()))
            });
            if let Some((Some(original), outbound)) = target {
                if let Some(Value::Object(params)) = notification.params.as_mut() {
                    params.insert("progressToken".into(), original);
                }
                outbound.send(Message::Notification(notification));
            }
            return;
        }
        // The child withdraws a request it sent a client: tell that client.
        if notification.method == methods::NOTIFICATION_CANCELLED {
            let route = cancelled_request(&notification).and_then(|t| {
                self.server_requests
                    .lock()
                    .expect("server_requests lock")
                    .remove(&t)
            });
            if let Some(route) = route {
                let message = Message::Notification(notification);
                let sent = route.outbound.is_some_and(|o| o.send(message.clone()));
                if !sent {
                    if let (Some(session), Some(sink)) = (route.session, self.slot.sink.get()) {
                        sink(&session, message);
                    }
                }
            }
            return;
        }
        let message = Message::Notification(notification);
        if let Some((_, outbound)) = self.latest() {
            if outbound.send(message.clone()) {
                return;
            }
        }
        if !self.slot.to_session(&message) {
            debug!(slot = %self.slot.label, "a notification with nobody to take it; dropped");
        }
    }
}

/// Drops a pending entry when its caller stops waiting.
struct PendingGuard<'a> {
    generation: &'a Generation,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.generation
            .pending
            .lock()
            .expect("pending lock")
            .remove(&self.id);
    }
}
