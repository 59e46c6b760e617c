//! `/mcp` and `/servers/{name}/mcp`: MCP Streamable HTTP (2025-11-25), plus stateless-era
//! (2026-07-28) requests, which need no session. The era is decided per request
//! ([`classify_request`]): a 2026-07-28 request has its `MCP-Protocol-Version`, `Mcp-Method`
//! and `Mcp-Name` headers checked against its body (400 -32020), is routed without a session,
//! gets the spec's statuses on errors (404 for an unknown method) and is cancelled when its
//! response is closed; GET and DELETE of that era get 405.
//!
//! - `POST`: one JSON-RPC message. A request is answered as JSON or as an SSE stream (the
//!   client's `Accept` decides; SSE when both are allowed, so progress and requests to the
//!   client can travel first). `initialize` without `Mcp-Session-Id` opens a client session
//!   pinned to one pool member; its id comes back in `Mcp-Session-Id`. Notifications and the
//!   client's answers to server requests get 202.
//! - `GET`: the session's server-to-client stream, or a stream resumed with `Last-Event-ID`.
//! - `DELETE`: ends the session.
//!
//! Host and Origin are checked (403) by the layer `app` puts around these routes. A session
//! opened with credentials (a static client token, an access token's subject) is bound to
//! them: anyone else naming it gets the 404 of an unknown session.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use mcp_protocol::jsonrpc::Message;
use mcp_protocol::jsonrpc::{ErrorCode, RequestId, Response as RpcResponse};
use mcp_protocol::streamable::{
    accepts_event_stream, classify_request, header_version, is_valid_session_id, negotiate_post,
    stateless_error_status, Era, RequestRefusal, ResponseMode, RoutingHeaders, EVENT_STREAM,
    KEEP_ALIVE, LAST_EVENT_ID_HEADER, METHOD_HEADER, NAME_HEADER, PROTOCOL_VERSION_HEADER,
    SESSION_ID_HEADER,
};
use mcp_protocol::wire::is_valid_pool_name;
use serde_json::Value;

use super::message::{client_answer, forwarded_headers, read_message};
use super::Caller;
use crate::broker::{Attached, Broker, Requester, Submission, STATELESS_ERA};
use crate::state::AppState;
use crate::{Error, RpcError};

/// `POST /mcp`.
pub(crate) async fn post_default(
    State(state): State<AppState>,
    who: Requester,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    post(state, String::new(), who, caller, headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `POST /servers/{name}/mcp`.
pub(crate) async fn post_named(
    State(state): State<AppState>,
    Path(name): Path<String>,
    who: Requester,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !is_valid_pool_name(&name) {
        return Error::InvalidPoolName.with_id(None).into_response();
    }
    post(state, name, who, caller, headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `GET /mcp`.
pub(crate) async fn get_default(
    State(state): State<AppState>,
    who: Requester,
    headers: HeaderMap,
) -> Response {
    get(state, "", who, headers).unwrap_or_else(IntoResponse::into_response)
}

/// `GET /servers/{name}/mcp`. The session names its server, but must belong to `name`: the
/// client token was checked for `name` only.
pub(crate) async fn get_named(
    State(state): State<AppState>,
    Path(name): Path<String>,
    who: Requester,
    headers: HeaderMap,
) -> Response {
    if !is_valid_pool_name(&name) {
        return Error::InvalidPoolName.with_id(None).into_response();
    }
    get(state, &name, who, headers).unwrap_or_else(IntoResponse::into_response)
}

/// `DELETE /mcp`.
pub(crate) async fn delete_default(
    State(state): State<AppState>,
    who: Requester,
    headers: HeaderMap,
) -> Response {
    delete(state, "", who, headers).unwrap_or_else(IntoResponse::into_response)
}

/// `DELETE /servers/{name}/mcp` (the session must belong to `name`, as for GET).
pub(crate) async fn delete_named(
    State(state): State<AppState>,
    Path(name): Path<String>,
    who: Requester,
    headers: HeaderMap,
) -> Response {
    if !is_valid_pool_name(&name) {
        return Error::InvalidPoolName.with_id(None).into_response();
    }
    delete(state, &name, who, headers).unwrap_or_else(IntoResponse::into_response)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The session id from `Mcp-Session-Id`: `None` when absent; 404 when malformed (it cannot
/// name a session of ours).
fn session_header(headers: &HeaderMap) -> Result<Option<String>, Error> {
    match header(headers, SESSION_ID_HEADER) {
        None if headers.contains_key(SESSION_ID_HEADER) => Err(Error::UnknownClientSession),
        None => Ok(None),
        Some(s) if is_valid_session_id(s) => Ok(Some(s.to_owned())),
        Some(_) => Err(Error::UnknownClientSession),
    }
}

/// The protocol version of the request (400 when the header names an unknown one).
fn version(headers: &HeaderMap) -> Result<&str, Error> {
    header_version(header(headers, PROTOCOL_VERSION_HEADER))
        .map_err(|e| Error::BadVersionHeader(e.0))
}

/// A request refused before routing (400 with -32020, or -32022 naming the supported versions).
fn refused(id: RequestId, refusal: &RequestRefusal) -> Response {
    tracing::debug!(%refusal, "2026-07-28 request refused");
    let error = refusal.to_error_object();
    crate::audit::note_error_code(error.code.0.into());
    let body = RpcResponse::error(Some(id), error);
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

/// 405 for a GET or DELETE of the stateless era (it has no session and no GET stream).
fn stateless_method(headers: &HeaderMap) -> Option<Response> {
    let version = header(headers, PROTOCOL_VERSION_HEADER)?.trim();
    mcp_protocol::version::is_stateless(version)
        .then(|| (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "POST")]).into_response())
}

/// The HTTP status of a final answer to a stateless-era request, by its error code: the
/// spec's (404 for -32601, 400 for bad params), or the proxy's own (503, 504, 502).
fn stateless_status(code: Option<i64>) -> StatusCode {
    if let Some(code) = code {
        crate::audit::note_error_code(code);
    }
    let Some(code) = code.and_then(|c| i32::try_from(c).ok()).map(ErrorCode) else {
        return StatusCode::OK;
    };
    let proxy_status = match code {
        ErrorCode::NO_SERVER => Some(StatusCode::SERVICE_UNAVAILABLE),
        ErrorCode::REQUEST_TIMEOUT => Some(StatusCode::GATEWAY_TIMEOUT),
        ErrorCode::SERVER_GONE => Some(StatusCode::BAD_GATEWAY),
        _ => None,
    };
    proxy_status
        .or_else(|| stateless_error_status(code).and_then(|s| StatusCode::from_u16(s).ok()))
        .unwrap_or(StatusCode::OK)
}

/// The error code of a JSON-RPC answer, if it is an error.
fn error_code(answer: &str) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct View {
        error: Option<Code>,
    }
    #[derive(serde::Deserialize)]
    struct Code {
        code: i64,
    }
    serde_json::from_str::<View>(answer)
        .ok()?
        .error
        .map(|e| e.code)
}

/// The JSON-RPC answer an SSE event carries, when the event is a final answer (not progress,
/// a log message or a request to the client).
fn final_answer(event: &str) -> Option<String> {
    let data: Vec<&str> = event
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    let data = data.join("\n");
    let v: Value = serde_json::from_str(&data).ok()?;
    let is_answer = v.get("method").is_none()
        && v.get("id").is_some()
        && (v.get("result").is_some() || v.get("error").is_some());
    is_answer.then_some(data)
}

async fn post(
    state: AppState,
    pool: String,
    who: Requester,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, RpcError> {
    let (message, raw) = read_message(body, state.config().max_body_bytes)?;
    crate::audit::note_message(&message);
    let id = match &message {
        Message::Request(r) => Some(r.id.clone()),
        _ => None,
    };
    let fail = |e: Error| e.with_id(id.clone());
    caller
        .check_tool_call(&state, &pool, &message)
        .map_err(fail)?;
    let era = match &message {
        Message::Request(r) => {
            let routing = RoutingHeaders {
                protocol_version: header(&headers, PROTOCOL_VERSION_HEADER),
                method: header(&headers, METHOD_HEADER),
                name: header(&headers, NAME_HEADER),
            };
            match classify_request(routing, &r.method, r.params.as_ref()) {
                Ok(era) => era,
                Err(refusal) => return Ok(refused(r.id.clone(), &refusal)),
            }
        }
        _ => Era::Handshake,
    };
    let version = version(&headers).map_err(fail)?;
    // A 2026-07-28 request (or notification) has no session: any `Mcp-Session-Id` is ignored.
    let stateless_era = era == Era::Stateless
        || (!matches!(message, Message::Request(_)) && version == STATELESS_ERA);
    let stateless = stateless_era || message.method() == Some("server/discover");
    let session = if stateless_era {
        None
    } else {
        session_header(&headers).map_err(fail)?
    };
    let broker = &state.broker;
    if let Some(s) = &session {
        broker.check_session_owner(s, who.token).map_err(fail)?;
    }

    let request = match message {
        Message::Response(r) => {
            let cs = session.ok_or(Error::MissingClientSession).map_err(fail)?;
            broker
                .client_reply(&pool, &cs, raw, r.id.as_ref())
                .map_err(fail)?;
            return Ok(StatusCode::ACCEPTED.into_response());
        }
        Message::Notification(_) => {
            if session.is_none() && !stateless {
                return Err(fail(Error::MissingClientSession));
            }
            let sub = submission(pool, session, raw, false, &headers, stateless, &caller);
            broker.submit(sub).map_err(fail)?;
            return Ok(StatusCode::ACCEPTED.into_response());
        }
        Message::Request(r) => r,
    };
    let id = request.id;
    let fail = |e: Error| e.with_id(Some(id.clone()));
    let mode = negotiate_post(header(&headers, header::ACCEPT.as_str()), ResponseMode::Sse)
        .ok_or(Error::NotAcceptable)
        .map_err(fail)?;
    let (session, minted) = match session {
        Some(s) => (Some(s), false),
        None if request.method == "initialize" && !stateless => (
            Some(broker.open_session_for(&pool, who).map_err(fail)?),
            true,
        ),
        None if stateless => (None, false),
        None => return Err(fail(Error::MissingClientSession)),
    };
    let forget = |e: Error| {
        if let (true, Some(s)) = (minted, &session) {
            broker.forget_session(s);
        }
        fail(e)
    };
    let sub = submission(
        pool,
        session.clone(),
        raw,
        true,
        &headers,
        stateless,
        &caller,
    );
    let session_to_send = session.as_deref().filter(|_| minted);
    // A client that hangs up before its `initialize` is answered never learns the session:
    // it ends then, not after the idle time.
    let abandoned = Abandoned::arm(broker, session.as_deref().filter(|_| minted));

    if mode == ResponseMode::Sse {
        let mut attached = broker.submit_streamed(sub, id.clone()).map_err(forget)?;
        let keep_alive = state.config().sse_keep_alive;
        if !stateless_era {
            return Ok(sse_response(
                attached,
                keep_alive,
                session_to_send,
                None,
                abandoned,
            ));
        }
        // A stateless stream cannot be resumed: no priming event. The answer is JSON unless
        // something comes before it (progress, a log message), so errors keep their HTTP status
        // (404 for an unknown method); a silent wait past the keep-alive interval commits to SSE
        // so comments hold the connection open. Dropping `attached` (the client went away)
        // cancels the request.
        attached.take_initial();
        let first = match tokio::time::timeout(keep_alive, attached.next()).await {
            Ok(Some(event)) => event,
            Ok(None) | Err(_) => {
                return Ok(sse_response(attached, keep_alive, None, None, abandoned))
            }
        };
        if let Some(answer) = final_answer(&first) {
            let status = stateless_status(error_code(&answer));
            return Ok(super::message::json_response(status, answer));
        }
        return Ok(sse_response(
            attached,
            keep_alive,
            None,
            Some(first),
            abandoned,
        ));
    }

    let mut waiter = broker.submit(sub).map_err(forget)?.expect("a request");
    let timeout = state.config().request_timeout;
    // Dropping `waiter` (timeout, or hyper dropping this future) withdraws the request.
    let answer = match tokio::time::timeout(timeout, waiter.answer()).await {
        Ok(answer) => answer.map_err(forget)?,
        Err(_) => return Err(forget(Error::RequestTimeout)),
    };
    drop(waiter);
    let code = stateless_era.then(|| error_code(answer.get())).flatten();
    let failed_init = minted
        && serde_json::from_str::<Value>(answer.get()).map_or(true, |v| v.get("error").is_some());
    let notification_method = request.method.starts_with("notifications/");
    let mut response =
        client_answer(answer, &id, notification_method, session.is_some()).map_err(forget)?;
    if stateless_era && response.status() == StatusCode::OK {
        *response.status_mut() = stateless_status(code);
    }
    if let Some(s) = &session {
        // The server forgot the session (404) or refused to open it: so does the proxy.
        if response.status() == StatusCode::NOT_FOUND || failed_init {
            broker.forget_session(s);
            return Ok(response);
        }
    }
    if let Some(s) = session_to_send {
        set_session_header(&mut response, s);
    }
    abandoned.disarm();
    Ok(response)
}

/// A session minted by an `initialize` still unanswered: dropped armed (the client went
/// away first), it ends the session.
struct Abandoned {
    broker: Broker,
    session: Option<String>,
}

impl Abandoned {
    fn arm(broker: &Broker, session: Option<&str>) -> Self {
        Abandoned {
            broker: broker.clone(),
            session: session.map(str::to_owned),
        }
    }

    /// The answer reached the client (or the session was already dealt with).
    fn disarm(mut self) {
        self.session = None;
    }
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            self.broker.abandon_session(&s);
        }
    }
}

fn submission(
    pool: String,
    client_session: Option<String>,
    message: Box<serde_json::value::RawValue>,
    expects_answer: bool,
    headers: &HeaderMap,
    stateless_era: bool,
    caller: &Caller,
) -> Submission {
    Submission {
        pool,
        client_session,
        message,
        expects_answer,
        streamable: true,
        headers: forwarded_headers(headers),
        stateless_era,
        identity: caller.identity(),
    }
}

fn get(
    state: AppState,
    pool: &str,
    who: Requester,
    headers: HeaderMap,
) -> Result<Response, RpcError> {
    if let Some(refused) = stateless_method(&headers) {
        return Ok(refused);
    }
    let fail = |e: Error| e.with_id(None);
    if !accepts_event_stream(header(&headers, header::ACCEPT.as_str())) {
        return Err(fail(Error::NotAcceptable));
    }
    version(&headers).map_err(fail)?;
    let session = session_header(&headers)
        .map_err(fail)?
        .ok_or_else(|| fail(Error::MissingClientSession))?;
    state
        .broker
        .check_session_owner(&session, who.token)
        .map_err(fail)?;
    let attached = state
        .broker
        .open_stream(pool, &session, header(&headers, LAST_EVENT_ID_HEADER))
        .map_err(fail)?;
    Ok(sse_response(
        attached,
        state.config().sse_keep_alive,
        None,
        None,
        Abandoned::arm(&state.broker, None),
    ))
}

fn delete(
    state: AppState,
    pool: &str,
    who: Requester,
    headers: HeaderMap,
) -> Result<Response, RpcError> {
    if let Some(refused) = stateless_method(&headers) {
        return Ok(refused);
    }
    let fail = |e: Error| e.with_id(None);
    let session = session_header(&headers)
        .map_err(fail)?
        .ok_or_else(|| fail(Error::MissingClientSession))?;
    state
        .broker
        .check_session_owner(&session, who.token)
        .map_err(fail)?;
    state.broker.end_session(pool, &session).map_err(fail)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn set_session_header(response: &mut Response, session: &str) {
    if let Ok(v) = HeaderValue::from_str(session) {
        response.headers_mut().insert(SESSION_ID_HEADER, v);
    }
}

/// An SSE response fed by an attached stream: the replayed and priming events (then `first`,
/// an event already taken off it), then live events until the stream ends, with a keep-alive
/// comment whenever it has been quiet.
fn sse_response(
    mut attached: Attached,
    keep_alive: Duration,
    session: Option<&str>,
    first: Option<String>,
    abandoned: Abandoned,
) -> Response {
    let mut initial = attached.take_initial();
    initial.extend(first);
    let keep_alive = keep_alive.max(Duration::from_millis(10));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + keep_alive, keep_alive);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // `attached` lives in the body: when hyper drops the body (the client went away), its
    // drop detaches the connection from the stream.
    // `abandoned` too: a minted session's stream that ends (its answer sent) disarms it; one
    // dropped before its end ends the session.
    let state = (attached, tick, Some(abandoned));
    let live = futures::stream::unfold(
        state,
        |(mut attached, mut tick, mut abandoned)| async move {
            tokio::select! {
                biased;
                chunk = attached.next() => match chunk {
                    Some(c) => {
                        // The answer is on its way: a client that hangs up after reading it
                        // (before the stream's end is seen) has not abandoned its session.
                        if abandoned.is_some() && attached.ended() {
                            if let Some(a) = abandoned.take() {
                                a.disarm();
                            }
                        }
                        Some((c, (attached, tick, abandoned)))
                    }
                    None => {
                        if let Some(a) = abandoned.take() {
                            a.disarm();
                        }
                        None
                    }
                },
                _ = tick.tick() => Some((KEEP_ALIVE.to_owned(), (attached, tick, abandoned))),
            }
        },
    );
    let body = futures::stream::iter(initial)
        .chain(live)
        .map(Ok::<_, Infallible>);
    let mut response = (
        [
            (header::CONTENT_TYPE, EVENT_STREAM),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response();
    // Tells nginx-style reverse proxies not to buffer the stream.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    if let Some(s) = session {
        set_session_header(&mut response, s);
    }
    response
}
