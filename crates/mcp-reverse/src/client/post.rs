//! Posting to the proxy: a request's interim messages and final answer, session messages,
//! deregistration; each retried with backoff as far as it is worth it.

use std::sync::Arc;
use std::time::Duration;

use mcp_protocol::jsonrpc::{ErrorObject, Message, Response};
use mcp_protocol::wire::{self, RequestItem, ResponseEnvelope};
use mcp_server::Outbound;
use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::gather::{Outcome, MAX_GATHERED_ANSWER};
use super::{Inner, Registration, CALL_TIMEOUT};
use crate::backoff::Backoff;
use crate::redact::http_cause;

/// How many times a final answer is posted before it is given up (network or 5xx trouble).
const FINAL_ATTEMPTS: u32 = 10;
/// How many times an interim message is posted before it is given up.
const INTERIM_ATTEMPTS: u32 = 3;

impl Inner {
    /// Runs one request on the server, posting its interim messages in order, then its answer.
    pub(super) async fn serve_request(
        self: &Arc<Self>,
        registration: &Registration,
        item: RequestItem,
    ) {
        let RequestItem {
            request_id,
            request,
            client_session,
            identity,
            ..
        } = item;
        let response = match Message::parse(request.get().as_bytes()) {
            Ok(message) => {
                let (tx, rx) = mpsc::unbounded_channel();
                let (done_tx, done_rx) = oneshot::channel();
                let drain = tokio::spawn(self.clone().drain_interim(
                    registration.clone(),
                    request_id.clone(),
                    rx,
                    done_rx,
                ));
                let response = self
                    .service
                    .handle_as(
                        client_session.as_deref(),
                        message,
                        Outbound::channel(tx),
                        identity.map(Arc::new),
                    )
                    .await;
                let _ = done_tx.send(());
                let _ = drain.await;
                response
            }
            // The proxy checks messages before queueing them; answer anyway rather than leave
            // the client waiting for the timeout.
            Err(e) => Some(e.to_response()),
        };
        self.post_final(registration, &request_id, response).await;
    }

    /// Posts interim messages for one request, in order, until the request is done and every
    /// message sent before that is posted.
    async fn drain_interim(
        self: Arc<Self>,
        registration: Registration,
        request_id: String,
        mut rx: mpsc::UnboundedReceiver<Message>,
        mut done: oneshot::Receiver<()>,
    ) {
        loop {
            tokio::select! {
                biased;
                message = rx.recv() => match message {
                    Some(m) => self.post_interim(&registration, &request_id, &m).await,
                    None => return,
                },
                _ = &mut done => {
                    rx.close();
                    while let Some(m) = rx.recv().await {
                        self.post_interim(&registration, &request_id, &m).await;
                    }
                    return;
                }
            }
        }
    }

    async fn post_interim(&self, registration: &Registration, request_id: &str, message: &Message) {
        let envelope = ResponseEnvelope::Interim {
            request_id: request_id.to_owned(),
            message: wire::to_raw(message),
        };
        let mut backoff = Backoff::new(Duration::from_secs(self.config.retry_delay_seconds));
        for _ in 0..INTERIM_ATTEMPTS {
            match self.post_response(registration, &envelope).await {
                Ok(StatusCode::OK) => return,
                Ok(status) if status.is_client_error() => {
                    debug!(%status, "interim message refused; the request is gone");
                    return;
                }
                Ok(status) => self.link_down(&format!("response post answered HTTP {status}")),
                Err(e) => self.link_down(&e),
            }
            if !self.pause(&mut backoff, &CancellationToken::new()).await {
                return;
            }
        }
        warn!("an interim message could not be delivered and was dropped");
    }

    /// Posts the service's session messages in order, under the current registration; a
    /// message that arrives while no registration is up waits for the next one.
    pub(super) async fn post_session_messages(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<(String, Message)>,
        stop: CancellationToken,
    ) {
        loop {
            let (client_session, message) = tokio::select! {
                _ = stop.cancelled() => return,
                next = rx.recv() => match next {
                    Some(next) => next,
                    None => return,
                },
            };
            let envelope = ResponseEnvelope::Session {
                client_session,
                message: wire::to_raw(&message),
            };
            let mut backoff = Backoff::new(Duration::from_secs(self.config.retry_delay_seconds));
            for _ in 0..INTERIM_ATTEMPTS {
                let registration = self.current.lock().expect("current lock").clone();
                let outcome = match &registration {
                    Some(registration) => self.post_response(registration, &envelope).await,
                    None => Ok(StatusCode::SERVICE_UNAVAILABLE),
                };
                match outcome {
                    Ok(StatusCode::OK) => break,
                    Ok(status) if status.is_client_error() => {
                        debug!(%status, "session message refused; the session is gone");
                        break;
                    }
                    Ok(_) | Err(_) => {}
                }
                if !self.pause(&mut backoff, &stop).await {
                    return;
                }
            }
        }
    }

    /// Posts the final answer (`null` after a notification), retrying transient trouble: the
    /// proxy answers a repeat with "duplicate", so retrying never delivers twice.
    pub(super) async fn post_final(
        self: &Arc<Self>,
        registration: &Registration,
        request_id: &str,
        response: Option<Response>,
    ) {
        // Serialized once, straight into the body the channel or the POST carries.
        let mut body = final_body(request_id, response.as_ref());
        let mut shrunk = false;
        let mut backoff = Backoff::new(Duration::from_secs(self.config.retry_delay_seconds));
        for _ in 0..FINAL_ATTEMPTS {
            match self.send_final(registration, body.clone()).await {
                Ok(StatusCode::OK) => {
                    self.link_up();
                    return;
                }
                Ok(StatusCode::NOT_FOUND) => {
                    debug!("answer refused: nobody waits for this request any more");
                    return;
                }
                Ok(StatusCode::PAYLOAD_TOO_LARGE) if !shrunk => {
                    warn!("the answer is larger than the proxy accepts; sending an error instead");
                    let id = response.as_ref().and_then(|r| r.id.clone());
                    let error = Response::error(
                        id,
                        ErrorObject::internal_error("response too large for the proxy"),
                    );
                    body = final_body(request_id, Some(&error));
                    shrunk = true;
                    continue;
                }
                Ok(status) if status.is_client_error() => {
                    error!(%status, "the proxy refused an answer; dropped");
                    return;
                }
                Ok(status) => self.link_down(&format!("response post answered HTTP {status}")),
                Err(e) => self.link_down(&e),
            }
            if !self.pause(&mut backoff, &CancellationToken::new()).await {
                return;
            }
        }
        error!("an answer could not be delivered after {FINAL_ATTEMPTS} attempts; dropped");
    }

    /// Posts an answer: over the channel when one is open and the answer is small enough,
    /// else by `POST /response`.
    async fn post_response(
        &self,
        registration: &Registration,
        envelope: &ResponseEnvelope,
    ) -> Result<StatusCode, String> {
        let body = serde_json::to_string(envelope).expect("envelopes serialize");
        let is_final = matches!(envelope, ResponseEnvelope::Final { .. });
        self.send_answer(registration, body, is_final).await
    }

    /// Sends a final answer's `body` over the channel if it takes it, else by `POST /response`,
    /// gathered with others that wait when the registration may post several at once.
    async fn send_final(self: &Arc<Self>, registration: &Registration, body: String) -> Outcome {
        let body = match self.over_channel(registration, body, true) {
            Ok(()) => return Ok(StatusCode::OK),
            Err(body) => body,
        };
        if registration.answers.enabled() && body.len() <= MAX_GATHERED_ANSWER {
            self.post_gathered(registration, body).await
        } else {
            self.post_http(registration, body).await
        }
    }

    /// Sends an answer's `body` over the channel if it takes it, else by `POST /response`.
    async fn send_answer(
        &self,
        registration: &Registration,
        body: String,
        is_final: bool,
    ) -> Outcome {
        match self.over_channel(registration, body, is_final) {
            Ok(()) => Ok(StatusCode::OK),
            Err(body) => self.post_http(registration, body).await,
        }
    }

    /// Hands `body` to the open channel; gives it back when there is none or it refuses.
    fn over_channel(
        &self,
        registration: &Registration,
        body: String,
        is_final: bool,
    ) -> Result<(), String> {
        let channel = self.channel.lock().expect("channel lock").clone();
        match channel {
            Some(channel) => channel.send(&registration.id, body, is_final),
            None => Err(body),
        }
    }

    /// `POST /response` with `body`.
    pub(super) async fn post_http(&self, registration: &Registration, body: String) -> Outcome {
        self.post_for_body(registration, body)
            .await
            .map(|(status, _)| status)
    }

    /// `POST /response` with `body`; the status and the reply's body (read whole, so the
    /// connection can be reused).
    pub(super) async fn post_for_body(
        &self,
        registration: &Registration,
        body: String,
    ) -> Result<(StatusCode, Vec<u8>), String> {
        let resp = self
            .http
            .post(self.response_url.clone())
            .query(&[("session_id", &*registration.id)])
            .header(CONTENT_TYPE, "application/json")
            .timeout(CALL_TIMEOUT)
            .body(body)
            .send()
            .await
            .map_err(http_cause)?;
        let status = resp.status();
        let reply = resp.bytes().await.map_err(http_cause)?.to_vec();
        Ok((status, reply))
    }

    /// Posts a final answer's `body` again by HTTP (after its channel broke), retrying
    /// transient trouble; a repeat that had landed is a harmless `duplicate`.
    pub(super) async fn post_body(&self, registration: &Registration, body: String) {
        let mut backoff = Backoff::new(Duration::from_secs(self.config.retry_delay_seconds));
        for _ in 0..FINAL_ATTEMPTS {
            match self.post_http(registration, body.clone()).await {
                Ok(status) if status.is_success() || status.is_client_error() => return,
                Ok(status) => self.link_down(&format!("response post answered HTTP {status}")),
                Err(e) => self.link_down(&e),
            }
            if !self.pause(&mut backoff, &CancellationToken::new()).await {
                return;
            }
        }
        error!("an answer could not be delivered after {FINAL_ATTEMPTS} attempts; dropped");
    }

    /// Leaves the pool so the proxy fails what is left at once instead of at its timeout.
    pub(super) async fn deregister(&self, registration: &Registration) {
        let sent = self
            .http
            .delete(self.register_url.clone())
            .query(&[("session_id", &*registration.id)])
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => {
                info!(
                    registration = registration.short(),
                    "deregistered from the proxy"
                )
            }
            Ok(resp) => debug!(status = %resp.status(), "deregistration not accepted"),
            Err(e) => debug!("deregistration failed: {}", http_cause(e)),
        }
    }
}

/// The body of a final answer (`null` after a notification), serialized in one pass.
fn final_body(request_id: &str, response: Option<&Response>) -> String {
    #[derive(serde::Serialize)]
    struct Final<'a> {
        request_id: &'a str,
        response: Option<&'a Response>,
    }
    serde_json::to_string(&Final {
        request_id,
        response,
    })
    .expect("answers serialize")
}
