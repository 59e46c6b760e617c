//! [`UpstreamBridge`]: forwards every message to a local MCP server that speaks Streamable
//! HTTP, one upstream session per client session.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use mcp_protocol::jsonrpc::{
    ErrorObject, Message, Notification, Outcome, Request, RequestId, Response,
};
use mcp_protocol::mcp::methods;
use mcp_protocol::sse::SseParser;
use mcp_protocol::streamable::{EVENT_STREAM, JSON, PROTOCOL_VERSION_HEADER, SESSION_ID_HEADER};
use mcp_server::Outbound;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{StatusCode, Url};
use serde_json::Value;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::closed::ClosedSessions;
use super::{cancelled_request, default_initialize_params, retarget_cancel, unavailable, with_id};
use crate::redact::http_cause;
use crate::service::{BoxFuture, Service, SessionSink};
use crate::Error;

/// Where the upstream server listens and how long it may take.
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// Its Streamable HTTP endpoint, e.g. `http://127.0.0.1:8000/mcp`.
    pub url: String,
    /// The longest wait for one answer (tools can be slow; the proxy has its own timeout).
    pub request_timeout: Duration,
    /// PEM certificates trusted for an `https://` upstream besides the public roots.
    pub ca_cert_pem: Option<String>,
}

impl UpstreamConfig {
    /// The endpoint `url`, with a request timeout of 10 minutes.
    pub fn new(url: impl Into<String>) -> Self {
        UpstreamConfig {
            url: url.into(),
            request_timeout: Duration::from_secs(600),
            ca_cert_pem: None,
        }
    }
}

/// Serves a local Streamable HTTP MCP server through the proxy.
///
/// Each client session gets an upstream session of its own (the upstream's `Mcp-Session-Id`
/// is kept per client session and deleted when the client session ends); sessionless clients
/// share one upstream session, initialized by the first of them or by the bridge. Request ids
/// are rewritten so that clients sharing an upstream session cannot collide. Answers may be
/// JSON or SSE: SSE notifications and requests travel to the client as interim messages, and
/// the upstream's GET stream of each session travels as session messages.
#[derive(Clone)]
pub struct UpstreamBridge {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    url: Url,
    /// Upstream sessions by client session, and the client sessions that ended. A std mutex:
    /// no await under it.
    sessions: Mutex<Sessions>,
    next_id: AtomicU64,
    /// Requests in flight: the bridge's id → (client session, client's id), for cancellations.
    in_flight: Mutex<HashMap<u64, (Option<String>, RequestId)>>,
    sink: OnceLock<SessionSink>,
}

/// The upstream sessions of a bridge and the client sessions that ended.
#[derive(Default)]
struct Sessions {
    /// Upstream sessions by client session (`None`: sessionless).
    map: HashMap<Option<String>, Arc<Upstream>>,
    /// Ended client sessions: a late message of one is refused and opens no upstream session.
    closed: ClosedSessions,
}

/// One upstream session.
#[derive(Default)]
struct Upstream {
    state: OnceCell<State>,
    /// Stops the GET stream.
    stop: CancellationToken,
    /// Whether its client session ended, and the upstream's session id to delete then. One
    /// lock for both, so an `initialize` that completes while the session closes is deleted
    /// by exactly one side. A std mutex: no await under it.
    lifecycle: Mutex<Lifecycle>,
}

#[derive(Default)]
struct Lifecycle {
    closed: bool,
    session_id: Option<String>,
}

#[derive(Clone)]
struct State {
    /// The upstream's `Mcp-Session-Id`, when it keeps sessions.
    session_id: Option<String>,
    /// The protocol version it chose, sent as `MCP-Protocol-Version`.
    version: Option<String>,
    /// Its `initialize` answer, given to later clients of this session.
    answer: Response,
}

/// What one POST came back with.
enum Answer {
    /// 202: accepted, nothing to say.
    Accepted,
    /// The JSON-RPC response.
    Response(Response),
    /// 404: the upstream forgot the session.
    SessionGone,
}

impl UpstreamBridge {
    /// A bridge to the Streamable HTTP endpoint of `config`; connects nothing yet.
    pub fn new(config: UpstreamConfig) -> Result<UpstreamBridge, Error> {
        let url = Url::parse(&config.url)
            .map_err(|e| Error::InvalidConfig(format!("upstream URL {:?}: {e}", config.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::InvalidConfig(format!(
                "upstream URL {:?}: the scheme must be http or https",
                config.url
            )));
        }
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .timeout(config.request_timeout);
        let http = crate::config::trust_pem(http, config.ca_cert_pem.as_deref())?.build()?;
        Ok(UpstreamBridge {
            inner: Arc::new(Inner {
                http,
                url,
                sessions: Mutex::new(Sessions::default()),
                next_id: AtomicU64::new(1),
                in_flight: Mutex::new(HashMap::new()),
                sink: OnceLock::new(),
            }),
        })
    }

    /// The upstream session of `session`, new if it has none; -32001 "unknown session" (the
    /// proxy answers its client 404) if the client session has ended: its `session_closed`
    /// overtook this message, and an upstream session opened now would never be deleted.
    fn upstream(&self, session: Option<&str>) -> Result<Arc<Upstream>, ErrorObject> {
        let mut sessions = self.inner.sessions.lock().expect("sessions lock");
        if session.is_some_and(|s| sessions.closed.contains(s)) {
            debug!(
                session = session.map(crate::redact::short_id),
                "a message of a client session that has ended; refused"
            );
            return Err(ErrorObject::unknown_session());
        }
        Ok(sessions
            .map
            .entry(session.map(str::to_owned))
            .or_default()
            .clone())
    }

    /// Forgets `upstream` if it is still the one of `session`.
    fn forget(&self, session: Option<&str>, upstream: &Arc<Upstream>) {
        let mut sessions = self.inner.sessions.lock().expect("sessions lock");
        let key = session.map(str::to_owned);
        if sessions
            .map
            .get(&key)
            .is_some_and(|u| Arc::ptr_eq(u, upstream))
        {
            sessions.map.remove(&key);
        }
        upstream.stop.cancel();
    }

    /// Initializes the upstream session once (with `params`, or the first client's).
    async fn state(
        &self,
        session: Option<&str>,
        upstream: &Upstream,
        params: Option<Value>,
    ) -> Result<State, ErrorObject> {
        upstream
            .state
            .get_or_try_init(|| async {
                let params = params.unwrap_or_else(default_initialize_params);
                let request = Request::new(0, methods::INITIALIZE, Some(params));
                let blank = State {
                    session_id: None,
                    version: None,
                    answer: Response::error(None, unavailable("")),
                };
                let (answer, session_id) = self
                    .post_request(&blank, request, &Outbound::none())
                    .await?;
                let answer = match answer {
                    Answer::Response(r) => r,
                    _ => {
                        return Err(unavailable(
                            "the upstream MCP server did not answer initialize",
                        ))
                    }
                };
                if let Outcome::Error(e) = &answer.outcome {
                    return Err(e.clone());
                }
                let version = answer
                    .as_result()
                    .and_then(|r| r.get("protocolVersion"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let state = State {
                    session_id,
                    version,
                    answer,
                };
                let initialized = Message::Notification(Notification::new(
                    methods::NOTIFICATION_INITIALIZED,
                    None,
                ));
                if let Err(e) = self
                    .post(&state, &initialized, &Outbound::none(), None)
                    .await
                {
                    debug!(
                        "notifications/initialized not delivered upstream: {}",
                        e.message
                    );
                }
                if let Some(session_id) = &state.session_id {
                    let mut lifecycle = upstream.lifecycle.lock().expect("lifecycle lock");
                    if lifecycle.closed {
                        // The client session ended while this was being set up.
                        drop(lifecycle);
                        self.delete_upstream_session(session_id.clone());
                        return Err(ErrorObject::unknown_session());
                    }
                    lifecycle.session_id = Some(session_id.clone());
                }
                if let (Some(client_session), Some(_)) = (session, &state.session_id) {
                    tokio::spawn(self.clone().listen(
                        client_session.to_owned(),
                        state.clone(),
                        upstream.stop.clone(),
                    ));
                }
                Ok(state)
            })
            .await
            .cloned()
    }

    async fn request(
        &self,
        session: Option<&str>,
        mut request: Request,
        outbound: Outbound,
    ) -> Result<Response, ErrorObject> {
        // One retry: a sessionless upstream session the upstream forgot is made again.
        for _ in 0..2 {
            let upstream = self.upstream(session)?;
            if request.method == methods::INITIALIZE {
                let state = self
                    .state(session, &upstream, request.params.clone())
                    .await?;
                return Ok(with_id(state.answer, request.id));
            }
            let state = self.state(session, &upstream, None).await?;
            let ours = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
            let original = std::mem::replace(&mut request.id, RequestId::from(ours as i64));
            self.inner
                .in_flight
                .lock()
                .expect("in_flight lock")
                .insert(ours, (session.map(str::to_owned), original.clone()));
            let result = self.post_request(&state, request.clone(), &outbound).await;
            self.inner
                .in_flight
                .lock()
                .expect("in_flight lock")
                .remove(&ours);
            request.id = original.clone();
            match result?.0 {
                Answer::Response(answer) => return Ok(with_id(answer, original)),
                Answer::Accepted => {
                    return Err(unavailable(
                        "the upstream MCP server accepted a request without answering it",
                    ))
                }
                Answer::SessionGone => {
                    self.forget(session, &upstream);
                    if session.is_some() {
                        // The client must initialize again: the proxy turns this into 404.
                        return Err(ErrorObject::unknown_session());
                    }
                }
            }
        }
        Err(unavailable(
            "the upstream MCP server keeps forgetting its session",
        ))
    }

    /// POSTs one request and returns its answer and the upstream's session id header.
    async fn post_request(
        &self,
        state: &State,
        request: Request,
        outbound: &Outbound,
    ) -> Result<(Answer, Option<String>), ErrorObject> {
        let id = request.id.clone();
        let mut session_id = None;
        let answer = self
            .post(
                state,
                &Message::Request(request),
                outbound,
                Some((&id, &mut session_id)),
            )
            .await?;
        Ok((answer, session_id))
    }

    /// POSTs one message. For a request (`wait` holds its id), reads the answer from a JSON
    /// body or an SSE stream, forwarding what comes before it through `outbound`.
    async fn post(
        &self,
        state: &State,
        message: &Message,
        outbound: &Outbound,
        wait: Option<(&RequestId, &mut Option<String>)>,
    ) -> Result<Answer, ErrorObject> {
        let mut post = self
            .inner
            .http
            .post(self.inner.url.clone())
            .header(CONTENT_TYPE, JSON)
            .header(ACCEPT, format!("{JSON}, {EVENT_STREAM}"))
            .body(serde_json::to_vec(message).expect("messages serialize"));
        if let Some(id) = &state.session_id {
            post = post.header(SESSION_ID_HEADER, id);
        }
        if let Some(version) = &state.version {
            post = post.header(PROTOCOL_VERSION_HEADER, version);
        }
        let mut resp = post.send().await.map_err(http_cause).map_err(|e| {
            warn!("the upstream MCP server cannot be reached: {e}");
            unavailable(format!("the upstream MCP server cannot be reached: {e}"))
        })?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND && state.session_id.is_some() {
            return Ok(Answer::SessionGone);
        }
        let Some((id, session_id)) = wait else {
            return match status {
                s if s.is_success() => Ok(Answer::Accepted),
                s => Err(unavailable(format!(
                    "the upstream MCP server answered HTTP {s}"
                ))),
            };
        };
        if let Some(sid) = resp
            .headers()
            .get(SESSION_ID_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            *session_id = Some(sid.to_owned());
        }
        let is_sse = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(EVENT_STREAM));
        if is_sse && status.is_success() {
            let mut events = SseParser::new();
            loop {
                let chunk =
                    resp.chunk().await.map_err(http_cause).map_err(|e| {
                        unavailable(format!("the upstream's event stream broke: {e}"))
                    })?;
                let Some(chunk) = chunk else {
                    return Err(unavailable(
                        "the upstream's event stream ended without an answer",
                    ));
                };
                // An event without data (a priming event's id) carries no message.
                for event in events
                    .push(&chunk)
                    .into_iter()
                    .filter(|e| !e.data.is_empty())
                {
                    match Message::parse(event.data.as_bytes()) {
                        Ok(Message::Response(r)) if r.id.as_ref() == Some(id) => {
                            return Ok(Answer::Response(r))
                        }
                        Ok(other) => {
                            outbound.send(other);
                        }
                        Err(e) => debug!("an upstream event that is not JSON-RPC ({e}); ignored"),
                    }
                }
            }
        }
        let body = resp
            .bytes()
            .await
            .map_err(http_cause)
            .map_err(|e| unavailable(format!("the upstream's answer broke: {e}")))?;
        match Message::parse(&body) {
            Ok(Message::Response(r)) => Ok(Answer::Response(r)),
            _ if status == StatusCode::ACCEPTED => Ok(Answer::Accepted),
            _ => Err(unavailable(format!(
                "the upstream MCP server answered HTTP {status} without a JSON-RPC response"
            ))),
        }
    }

    /// Forwards the upstream's GET stream of one session as session messages, until `stop`.
    async fn listen(self, client_session: String, state: State, stop: CancellationToken) {
        let mut get = self
            .inner
            .http
            .get(self.inner.url.clone())
            .header(ACCEPT, EVENT_STREAM)
            // The stream is long-lived: no whole-request timeout.
            .timeout(Duration::from_secs(365 * 24 * 3600));
        if let Some(id) = &state.session_id {
            get = get.header(SESSION_ID_HEADER, id);
        }
        if let Some(version) = &state.version {
            get = get.header(PROTOCOL_VERSION_HEADER, version);
        }
        let resp = tokio::select! {
            _ = stop.cancelled() => return,
            resp = get.send() => resp,
        };
        let mut resp = match resp {
            Ok(resp) if resp.status().is_success() => resp,
            // 405: the upstream offers no stream; nothing to forward.
            _ => return,
        };
        let mut events = SseParser::new();
        loop {
            let chunk = tokio::select! {
                _ = stop.cancelled() => return,
                chunk = resp.chunk() => chunk,
            };
            let Ok(Some(chunk)) = chunk else { return };
            for event in events
                .push(&chunk)
                .into_iter()
                .filter(|e| !e.data.is_empty())
            {
                if let (Ok(message), Some(sink)) =
                    (Message::parse(event.data.as_bytes()), self.inner.sink.get())
                {
                    sink(&client_session, message);
                }
            }
        }
    }
}

impl Service for UpstreamBridge {
    fn handle<'a>(
        &'a self,
        session: Option<&'a str>,
        message: Message,
        outbound: Outbound,
    ) -> BoxFuture<'a, Option<Response>> {
        Box::pin(async move {
            match message {
                Message::Request(request) => {
                    let id = request.id.clone();
                    Some(match self.request(session, request, outbound).await {
                        Ok(answer) => answer,
                        Err(error) => Response::error(Some(id), error),
                    })
                }
                Message::Notification(mut notification) => {
                    // The bridge sent the upstream its own when it initialized the session.
                    if notification.method == methods::NOTIFICATION_INITIALIZED {
                        return None;
                    }
                    if notification.method == methods::NOTIFICATION_CANCELLED
                        && !self.rewrite_cancel(session, &mut notification)
                    {
                        return None;
                    }
                    let Ok(upstream) = self.upstream(session) else {
                        return None;
                    };
                    if let Ok(state) = self.state(session, &upstream, None).await {
                        let message = Message::Notification(notification);
                        if let Err(e) = self.post(&state, &message, &Outbound::none(), None).await {
                            debug!("a notification was not delivered upstream: {}", e.message);
                        }
                    }
                    None
                }
                Message::Response(response) => {
                    let Ok(upstream) = self.upstream(session) else {
                        return None;
                    };
                    if let Some(state) = upstream.state.get() {
                        let message = Message::Response(response);
                        if let Err(e) = self.post(state, &message, &Outbound::none(), None).await {
                            debug!("a reply was not delivered upstream: {}", e.message);
                        }
                    }
                    None
                }
            }
        })
    }

    /// Deletes the session's upstream session (stopping its GET stream), and remembers the
    /// session as ended so that a late message of it is refused.
    fn close_session(&self, session: &str) {
        let upstream = {
            let mut sessions = self.inner.sessions.lock().expect("sessions lock");
            sessions.closed.insert(session);
            sessions.map.remove(&Some(session.to_owned()))
        };
        let Some(upstream) = upstream else { return };
        upstream.stop.cancel();
        let session_id = {
            let mut lifecycle = upstream.lifecycle.lock().expect("lifecycle lock");
            lifecycle.closed = true;
            lifecycle.session_id.take()
        };
        if let Some(session_id) = session_id {
            self.delete_upstream_session(session_id);
        }
    }

    fn set_session_sink(&self, sink: SessionSink) {
        let _ = self.inner.sink.set(sink);
    }
}

impl UpstreamBridge {
    /// Deletes an upstream session in the background (best effort: the upstream expires what
    /// it is not told about).
    fn delete_upstream_session(&self, session_id: String) {
        let delete = self
            .inner
            .http
            .delete(self.inner.url.clone())
            .header(SESSION_ID_HEADER, session_id)
            .timeout(Duration::from_secs(10));
        tokio::spawn(async move {
            if let Err(e) = delete.send().await {
                debug!("the upstream session was not deleted: {}", http_cause(e));
            }
        });
    }

    /// Points a client's `notifications/cancelled` at the bridge's id; `false` when the
    /// request is not in flight (then there is nothing to cancel).
    fn rewrite_cancel(&self, session: Option<&str>, notification: &mut Notification) -> bool {
        let Some(target) = cancelled_request(notification) else {
            return false;
        };
        let ours = self
            .inner
            .in_flight
            .lock()
            .expect("in_flight lock")
            .iter()
            .find(|(_, (s, id))| s.as_deref() == session && *id == target)
            .map(|(ours, _)| *ours);
        ours.is_some_and(|ours| retarget_cancel(notification, ours))
    }
}
