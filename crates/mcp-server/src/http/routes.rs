//! The endpoint's handlers: POST (messages), GET (the session's stream), DELETE (end it).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use mcp_protocol::mcp::methods;
use mcp_protocol::streamable::{
    accepts_event_stream, classify_request, header_version, negotiate_post, sends_priming_event,
    sse_event, sse_priming_event, stateless_error_status, unsupported_version_error, Era, EventId,
    ResponseMode, RoutingHeaders, EVENT_STREAM, JSON, KEEP_ALIVE, LAST_EVENT_ID_HEADER,
    METHOD_HEADER, NAME_HEADER, PROTOCOL_VERSION_HEADER, SESSION_ID_HEADER,
};
use mcp_protocol::version;
use mcp_protocol::{ErrorCode, ErrorObject, Message};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio_util::sync::CancellationToken;

use super::streams::SessionStreams;
use super::{ResponsePreference, Transport};
use crate::Outbound;

/// The answer to a request, as [`crate::Server::handle`] gives it.
type Work = Pin<Box<dyn Future<Output = Option<mcp_protocol::Response>> + Send>>;

/// JSON-RPC's implementation-defined server error, for transport refusals (403).
const REFUSED: ErrorCode = ErrorCode(-32000);

pub(super) fn router(transport: Arc<Transport>) -> Router {
    let path = transport.config.path.clone();
    let limit = transport.config.max_body_bytes;
    Router::new()
        .route(&path, get(get_stream).post(post).delete(delete))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(transport)
}

/// How one POST is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Json,
    Sse,
    /// JSON unless the handler sends something first.
    Adaptive,
}

fn choose_mode(accept: Option<&str>, preference: ResponsePreference) -> Option<Mode> {
    let json_first = negotiate_post(accept, ResponseMode::Json)?;
    let sse_first = negotiate_post(accept, ResponseMode::Sse)?;
    if json_first != sse_first {
        // The client accepts both: ours to choose.
        return Some(match preference {
            ResponsePreference::Adaptive => Mode::Adaptive,
            ResponsePreference::Json => Mode::Json,
            ResponsePreference::Sse => Mode::Sse,
        });
    }
    Some(match json_first {
        ResponseMode::Json => Mode::Json,
        ResponseMode::Sse => Mode::Sse,
    })
}

fn header(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A JSON body.
fn json_body(status: StatusCode, message: &Message, session: Option<&str>) -> Response {
    let body = match serde_json::to_vec(message) {
        Ok(body) => body,
        Err(e) => {
            tracing::error!("cannot encode an answer: {e}");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let mut response = (status, [(header::CONTENT_TYPE, JSON)], body).into_response();
    if let Some(id) = session.and_then(|s| HeaderValue::from_str(s).ok()) {
        response.headers_mut().insert(SESSION_ID_HEADER, id);
    }
    response
}

/// A request refused before it reaches the server: an HTTP status and a JSON-RPC error with
/// `id: null`.
struct Refusal {
    status: StatusCode,
    code: ErrorCode,
    message: &'static str,
}

impl Refusal {
    const fn new(status: StatusCode, code: ErrorCode, message: &'static str) -> Self {
        Refusal {
            status,
            code,
            message,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        refuse(self.status, self.code, self.message)
    }
}

/// An error not tied to a readable request (`id: null`).
fn refuse(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Response {
    let error = ErrorObject::new(code, message);
    json_body(
        status,
        &Message::Response(mcp_protocol::Response::error(None, error)),
        None,
    )
}

/// What a handler fails with: a boxed response (small on the happy path).
struct Refused(Box<Response>);

impl From<Refusal> for Refused {
    fn from(r: Refusal) -> Self {
        Refused(Box::new(r.into_response()))
    }
}

impl From<Box<Response>> for Refused {
    fn from(r: Box<Response>) -> Self {
        Refused(r)
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        *self.0
    }
}

const UNKNOWN_SESSION: Refusal = Refusal::new(
    StatusCode::NOT_FOUND,
    ErrorCode::UNKNOWN_SESSION,
    "Session not found: it ended or expired; send initialize to start a new one",
);

const MISSING_SESSION: Refusal = Refusal::new(
    StatusCode::BAD_REQUEST,
    ErrorCode::INVALID_REQUEST,
    "Bad Request: Mcp-Session-Id header is required",
);

/// 403 unless the `Host` (or HTTP/2 authority) and `Origin` are allowed.
fn check_host(t: &Transport, headers: &HeaderMap, uri: &Uri) -> Result<(), Refusal> {
    let allowed = &t.config.allowed_hosts;
    let host = header(headers, header::HOST).or_else(|| uri.authority().map(|a| a.as_str()));
    if host.is_some_and(|h| !allowed.allows_host(h)) {
        tracing::debug!("request with a Host outside the allow-list refused");
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            REFUSED,
            "Forbidden: Host not allowed",
        ));
    }
    if !allowed.allows_origin(header(headers, header::ORIGIN)) {
        tracing::debug!("request with an Origin outside the allow-list refused");
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            REFUSED,
            "Forbidden: Origin not allowed",
        ));
    }
    Ok(())
}

/// The request's protocol version from its header, or 400 -32022 naming the supported ones.
fn check_version(headers: &HeaderMap) -> Result<String, Box<Response>> {
    header_version(header(headers, PROTOCOL_VERSION_HEADER))
        .map(str::to_owned)
        .map_err(|e| {
            let answer = mcp_protocol::Response::error(None, unsupported_version_error(&e.0));
            Box::new(json_body(
                StatusCode::BAD_REQUEST,
                &Message::Response(answer),
                None,
            ))
        })
}

/// 405 for a GET or DELETE of the stateless era, which has no session and no GET stream.
fn refuse_stateless_method(headers: &HeaderMap) -> Result<(), Refused> {
    let stateless = header(headers, PROTOCOL_VERSION_HEADER)
        .is_some_and(|v| mcp_protocol::version::is_stateless(v.trim()));
    if stateless {
        let refusal = (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "POST")]);
        return Err(Refused(Box::new(refusal.into_response())));
    }
    Ok(())
}

async fn post(
    State(t): State<Arc<Transport>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refused> {
    check_host(&t, &headers, &uri)?;
    if let Some(ct) = header(&headers, header::CONTENT_TYPE) {
        let media = ct.split(';').next().unwrap_or("").trim();
        if !media.eq_ignore_ascii_case(JSON) {
            return Err(Refusal::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::INVALID_REQUEST,
                "Unsupported Media Type: Content-Type must be application/json",
            )
            .into());
        }
    }
    let Some(mode) = choose_mode(header(&headers, header::ACCEPT), t.config.response) else {
        return Err(Refusal::new(
            StatusCode::NOT_ACCEPTABLE,
            ErrorCode::INVALID_REQUEST,
            "Not Acceptable: Accept must allow application/json or text/event-stream",
        )
        .into());
    };
    let message = match Message::parse(&body) {
        Ok(m) => m,
        Err(e) => {
            let answer = Message::Response(e.to_response());
            return Ok(json_body(StatusCode::BAD_REQUEST, &answer, None));
        }
    };
    let session_header = header(&headers, SESSION_ID_HEADER);

    if let Message::Request(r) = &message {
        let routing = RoutingHeaders {
            protocol_version: header(&headers, PROTOCOL_VERSION_HEADER),
            method: header(&headers, METHOD_HEADER),
            name: header(&headers, NAME_HEADER),
        };
        let era = classify_request(routing, &r.method, r.params.as_ref());
        if r.method == methods::INITIALIZE && era != Ok(Era::Stateless) {
            // The version travels in the body; the session is new whatever the client sent.
            return Ok(initialize(&t, message, mode).await);
        }
        let era = era.map_err(|refusal| {
            let answer =
                mcp_protocol::Response::error(Some(r.id.clone()), refusal.to_error_object());
            Box::new(json_body(
                StatusCode::BAD_REQUEST,
                &Message::Response(answer),
                None,
            ))
        })?;
        if era == Era::Stateless {
            // Served without a session (any `Mcp-Session-Id` is ignored). When the client takes
            // both, JSON unless the handler sends something first, so that errors keep their
            // HTTP status (404 for an unknown method, 400 for bad params).
            let mode = match mode {
                Mode::Sse if t.config.response == ResponsePreference::Sse => choose_mode(
                    header(&headers, header::ACCEPT),
                    ResponsePreference::Adaptive,
                )
                .unwrap_or(mode),
                other => other,
            };
            let version = routing
                .protocol_version
                .unwrap_or_default()
                .trim()
                .to_owned();
            return Ok(answer(&t, None, message, mode, &version).await);
        }
        if r.method == methods::SERVER_DISCOVER && session_header.is_none() {
            let version = check_version(&headers)?;
            return Ok(answer(&t, None, message, mode, &version).await);
        }
    }
    let version = check_version(&headers)?;
    let Some(sid) = session_header else {
        if version::is_stateless(&version) && !matches!(message, Message::Request(_)) {
            // A 2026-07-28 client's notification (a cancellation, say): no session to name.
            t.server.handle(None, message, Outbound::none()).await;
            return Ok(StatusCode::ACCEPTED.into_response());
        }
        return Err(MISSING_SESSION.into());
    };
    let streams = t.session(sid).ok_or(UNKNOWN_SESSION)?;
    Ok(match message {
        Message::Request(_) => {
            answer(&t, Some((sid.to_owned(), streams)), message, mode, &version).await
        }
        // Notifications, and the client's answers to the server's requests.
        other => {
            t.server.handle(Some(sid), other, Outbound::none()).await;
            StatusCode::ACCEPTED.into_response()
        }
    })
}

/// `initialize`: a new session, its id on the answer.
async fn initialize(t: &Arc<Transport>, message: Message, mode: Mode) -> Response {
    let sid = uuid::Uuid::new_v4().to_string();
    // `initialize` sends nothing to the client while it runs.
    let Some(response) = t.server.handle(Some(&sid), message, Outbound::none()).await else {
        return StatusCode::ACCEPTED.into_response();
    };
    let started = response.as_result().is_some();
    if started {
        t.add_session(sid.clone());
    } else {
        t.server.close_session(&sid);
    }
    let session = started.then_some(sid.as_str());
    let message = Message::Response(response);
    if mode == Mode::Sse {
        let (tx, rx) = unbounded_channel();
        if let Ok(data) = serde_json::to_string(&message) {
            let _ = tx.send(Bytes::from(sse_event(None, &data)));
        }
        drop(tx);
        let mut r = sse_response(t, rx, None, None);
        if let Some(id) = session.and_then(|s| HeaderValue::from_str(s).ok()) {
            r.headers_mut().insert(SESSION_ID_HEADER, id);
        }
        return r;
    }
    json_body(StatusCode::OK, &message, session)
}

/// Answers a request of a session (or of none), as JSON or as an SSE stream.
async fn answer(
    t: &Arc<Transport>,
    session: Option<(String, Arc<SessionStreams>)>,
    message: Message,
    mode: Mode,
    version: &str,
) -> Response {
    let sid = session.as_ref().map(|(id, _)| id.clone());
    let stateless = version::is_stateless(version);
    if mode == Mode::Json {
        // The handler's messages go to the session's GET stream (if the client opened one).
        let outbound = match &session {
            Some((_, streams)) => {
                let streams = Arc::clone(streams);
                Outbound::fallible(move |m| streams.send_on_get(&m))
            }
            None => Outbound::none(),
        };
        let response = t.server.handle(sid.as_deref(), message, outbound).await;
        return json_answer(response, stateless);
    }
    let (tx, mut rx) = unbounded_channel();
    let server = t.server.clone();
    let handle_sid = sid.clone();
    let mut work: Work = Box::pin(async move {
        server
            .handle(handle_sid.as_deref(), message, Outbound::channel(tx))
            .await
    });
    let mut first = None;
    if mode == Mode::Adaptive {
        tokio::select! {
            biased;
            m = rx.recv() => match m {
                Some(m) => first = Some(m),
                None => return json_answer(work.await, stateless),
            },
            response = &mut work => {
                if rx.is_empty() {
                    return json_answer(response, stateless);
                }
                // The handler sent messages and finished in one go: stream them, then the
                // answer.
                work = Box::pin(std::future::ready(response));
            }
            // A long, silent handler: commit to SSE so keep-alive comments hold the
            // connection open through idle timeouts on the way.
            () = tokio::time::sleep(t.config.keep_alive) => {}
        }
    }
    match session {
        Some((sid, streams)) => {
            let stream = streams.open_post();
            let live = stream.connect();
            let priming = sends_priming_event(version).then(|| {
                sse_priming_event(
                    &EventId {
                        stream: stream.id(),
                        seq: 0,
                    }
                    .to_string(),
                )
            });
            if let Some(m) = &first {
                stream.push(m);
            }
            // The work goes on if the client drops the connection: it can resume the stream
            // (disconnection is not cancellation; `notifications/cancelled` is).
            tokio::spawn(async move {
                let response = drive(work, rx, |m| {
                    stream.push(m);
                })
                .await;
                if let Some(r) = response {
                    stream.finish(&Message::Response(r));
                }
                streams.post_finished(&stream);
            });
            sse_response(t, live, priming, Some(sid))
        }
        None => {
            // Sessionless: nothing to resume, so the work stops when the client goes away.
            let (tx, live) = unbounded_channel();
            let frame = |m: &Message| {
                serde_json::to_string(m)
                    .ok()
                    .map(|data| Bytes::from(sse_event(None, &data)))
            };
            if let Some(f) = first.as_ref().and_then(frame) {
                let _ = tx.send(f);
            }
            tokio::spawn(async move {
                tokio::select! {
                    () = tx.closed() => tracing::debug!("client left; its request is abandoned"),
                    response = drive(work, rx, |m| {
                        if let Some(f) = frame(m) {
                            let _ = tx.send(f);
                        }
                    }) => {
                        if let Some(f) = response.map(Message::Response).as_ref().and_then(frame) {
                            let _ = tx.send(f);
                        }
                    }
                }
            });
            sse_response(t, live, None, None)
        }
    }
}

/// Runs the work, pushing what it sends on the way; returns its answer after the last message.
async fn drive(
    mut work: Work,
    mut rx: UnboundedReceiver<Message>,
    push: impl Fn(&Message),
) -> Option<mcp_protocol::Response> {
    loop {
        tokio::select! {
            biased;
            Some(m) = rx.recv() => push(&m),
            response = &mut work => {
                while let Ok(m) = rx.try_recv() {
                    push(&m);
                }
                return response;
            }
        }
    }
}

/// A JSON answer: 200, or 404 when the server no longer knows the session. Errors answering a
/// stateless-era request get the spec's status (404 for an unknown method, 400 for bad params).
fn json_answer(response: Option<mcp_protocol::Response>, stateless: bool) -> Response {
    let Some(response) = response else {
        return StatusCode::ACCEPTED.into_response();
    };
    let code = response.as_error().map(|e| e.code);
    let status = match code {
        Some(code) if stateless => stateless_error_status(code)
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::OK),
        Some(ErrorCode::UNKNOWN_SESSION) => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    };
    json_body(status, &Message::Response(response), None)
}

/// An SSE response writing `frames` (after `first`), with keep-alive comments; it ends when
/// the frames end, the session ends or the server shuts down.
fn sse_response(
    t: &Transport,
    frames: UnboundedReceiver<Bytes>,
    first: Option<String>,
    session: Option<String>,
) -> Response {
    let alive: Box<dyn Fn() -> bool + Send> = match session {
        Some(sid) => {
            let server = t.server.clone();
            Box::new(move || server.has_session(&sid))
        }
        None => Box::new(|| true),
    };
    let every = t.config.keep_alive;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = BodyState {
        frames,
        tick,
        shutdown: t.shutdown.clone(),
        alive,
    };
    let head = futures::stream::iter(first.map(|f| Ok::<_, Infallible>(Bytes::from(f))));
    let rest = futures::stream::unfold(state, |mut st| async move {
        let next = tokio::select! {
            biased;
            frame = st.frames.recv() => frame,
            () = st.shutdown.cancelled() => None,
            _ = st.tick.tick() => (st.alive)().then(|| Bytes::from_static(KEEP_ALIVE.as_bytes())),
        };
        next.map(|frame| (Ok::<_, Infallible>(frame), st))
    });
    let body = Body::from_stream(futures::StreamExt::chain(head, rest));
    (
        [
            (header::CONTENT_TYPE, EVENT_STREAM),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

struct BodyState {
    frames: UnboundedReceiver<Bytes>,
    tick: tokio::time::Interval,
    shutdown: CancellationToken,
    /// Whether the stream's session still exists.
    alive: Box<dyn Fn() -> bool + Send>,
}

async fn get_stream(
    State(t): State<Arc<Transport>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Refused> {
    check_host(&t, &headers, &uri)?;
    refuse_stateless_method(&headers)?;
    if !accepts_event_stream(header(&headers, header::ACCEPT)) {
        return Err(Refusal::new(
            StatusCode::NOT_ACCEPTABLE,
            ErrorCode::INVALID_REQUEST,
            "Not Acceptable: Accept must allow text/event-stream",
        )
        .into());
    }
    let sid = header(&headers, SESSION_ID_HEADER).ok_or(MISSING_SESSION)?;
    check_version(&headers)?;
    let streams = t.session(sid).ok_or(UNKNOWN_SESSION)?;
    let resumed = header(&headers, LAST_EVENT_ID_HEADER)
        .and_then(EventId::parse)
        .and_then(|id| Some((streams.find(&id.stream)?, id.seq)))
        .and_then(|(stream, after)| {
            let frames = stream.resume(after)?;
            if stream.is_finished() {
                // Replayed to its end: nothing more will come on it.
                streams.forget(&stream);
            }
            Some(frames)
        });
    let frames = match resumed {
        Some(frames) => frames,
        None => {
            if headers.contains_key(LAST_EVENT_ID_HEADER) {
                tracing::debug!("Last-Event-ID names nothing replayable; opening a fresh stream");
            }
            streams.get_stream().connect()
        }
    };
    Ok(sse_response(&t, frames, None, Some(sid.to_owned())))
}

async fn delete(
    State(t): State<Arc<Transport>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<StatusCode, Refused> {
    check_host(&t, &headers, &uri)?;
    refuse_stateless_method(&headers)?;
    let sid = header(&headers, SESSION_ID_HEADER).ok_or(MISSING_SESSION)?;
    check_version(&headers)?;
    t.session(sid).ok_or(UNKNOWN_SESSION)?;
    t.server.close_session(sid);
    t.end_session(sid);
    Ok(StatusCode::NO_CONTENT)
}
