//! `POST /message` (default pool) and `POST /servers/{name}/message`: the seed's client route.
//!
//! One JSON-RPC request or notification in, one answer out: the server's response with the
//! client's own id, HTTP 200 for any JSON-RPC answer (the seed's client needs it). Interim
//! messages cannot travel on this route: the broker drops notifications tied to the request
//! and refuses requests to the client on the server's behalf.

use std::collections::BTreeMap;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use mcp_protocol::jsonrpc::{ErrorCode, Message, RequestId};
use mcp_protocol::wire::is_valid_pool_name;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::Caller;
use crate::broker::{id_text, Requester, Submission, STATELESS_ERA};
use crate::state::AppState;
use crate::{Error, RpcError};

/// The client session header.
const SESSION_HEADER: &str = "mcp-session-id";
/// Headers forwarded to modern registrations.
pub(crate) const FORWARDED: [&str; 3] = ["mcp-method", "mcp-name", "mcp-protocol-version"];

/// `POST /message`: the default pool.
pub(crate) async fn default_pool(
    State(state): State<AppState>,
    who: Requester,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(state, String::new(), (who, caller), headers, body).await
}

/// `POST /servers/{name}/message`: the pool `name`.
pub(crate) async fn named_pool(
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
    handle(state, name, (who, caller), headers, body).await
}

async fn handle(
    state: AppState,
    pool: String,
    caller: (Requester, Caller),
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match forward(state, pool, caller, headers, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn forward(
    state: AppState,
    pool: String,
    (who, caller): (Requester, Caller),
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, RpcError> {
    let (message, raw) = read_message(body, state.config().max_body_bytes)?;
    crate::audit::note_message(&message);
    caller
        .check_tool_call(&state, &pool, &message)
        .map_err(|e| e.with_id(message.id().cloned()))?;
    let (id, method) = match &message {
        Message::Request(r) => (Some(r.id.clone()), r.method.as_str()),
        Message::Notification(n) => (None, n.method.as_str()),
        Message::Response(r) => return Err(Error::ResponseNotAccepted.with_id(r.id.clone())),
    };

    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let client_session = header(SESSION_HEADER).map(str::to_owned);
    if let Some(cs) = &client_session {
        state
            .broker
            .check_session_owner(cs, who.token)
            .map_err(|e| e.with_id(id.clone()))?;
    }
    let forwarded = forwarded_headers(&headers);
    let stateless_era =
        method == "server/discover" || header("mcp-protocol-version") == Some(STATELESS_ERA);
    let is_notification_method = method.starts_with("notifications/");
    let pinned = client_session.is_some();

    let submission = Submission {
        pool,
        client_session,
        message: raw,
        expects_answer: id.is_some(),
        streamable: false,
        headers: forwarded,
        stateless_era,
        identity: caller.identity(),
    };
    let waiter = state
        .broker
        .submit(submission)
        .map_err(|e| e.with_id(id.clone()))?;
    let (Some(mut waiter), Some(id)) = (waiter, id) else {
        return Ok(StatusCode::ACCEPTED.into_response());
    };
    let timeout = state.config().request_timeout;
    // Dropping `waiter` (timeout, or hyper dropping this future) withdraws the request.
    let answer = match tokio::time::timeout(timeout, waiter.answer()).await {
        Ok(answer) => answer.map_err(|e| e.with_id(Some(id.clone())))?,
        Err(_) => return Err(Error::RequestTimeout.with_id(Some(id))),
    };
    drop(waiter);
    client_answer(answer, &id, is_notification_method, pinned).map_err(|e| e.with_id(Some(id)))
}

/// Reads a client body as one JSON-RPC message, keeping its exact bytes: 413 over the limit,
/// -32700 when not JSON, -32600 when not one JSON-RPC message (batches included).
pub(crate) fn read_message(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<(Message, Box<RawValue>), RpcError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::MessageTooLarge { limit }.with_id(None)
        } else {
            Error::InvalidMessage(mcp_protocol::jsonrpc::ParseError::NotJson(e.body_text()))
                .with_id(None)
        }
    })?;
    let message = Message::parse(&body).map_err(|e| {
        let id = e.id();
        Error::InvalidMessage(e).with_id(id)
    })?;
    // Parsed once above; this only captures the exact bytes (`parse` accepted them as JSON).
    let raw: Box<RawValue> = serde_json::from_slice(&body)
        .map_err(|e| Error::InvalidBody(e.to_string()).with_id(message.id().cloned()))?;
    Ok((message, raw))
}

/// The request headers forwarded to modern registrations, lowercase names.
pub(crate) fn forwarded_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    FORWARDED
        .iter()
        .filter_map(|name| {
            let value = headers.get(*name)?.to_str().ok()?;
            Some(((*name).to_owned(), value.to_owned()))
        })
        .collect()
}

/// The parts of a server's answer the proxy reads; the rest passes through as bytes.
#[derive(Deserialize)]
struct AnswerView<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(default)]
    error: Option<ErrorView>,
}

#[derive(Deserialize)]
struct ErrorView {
    code: Option<i64>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Turns the server's final answer into the client's HTTP response.
pub(crate) fn client_answer(
    answer: Box<RawValue>,
    id: &RequestId,
    notification_method: bool,
    pinned: bool,
) -> Result<Response, Error> {
    let text = answer.get();
    // One borrowed scan reads what routing needs; the answer's body (a tool result of
    // megabytes, say) is never built into a tree on this path.
    let view: Option<AnswerView<'_>> =
        if text == "null" {
            None
        } else {
            Some(serde_json::from_str(text).map_err(|e| {
                Error::InvalidServerResponse(format!("not a JSON-RPC response: {e}"))
            })?)
        };
    let view = match view {
        Some(view) if view.result.is_some() || view.error.is_some() => view,
        view => {
            // No outcome: fine only as the empty answer to a notification-named request.
            let empty = view.is_none()
                || serde_json::from_str::<Map<String, Value>>(text).is_ok_and(|m| m.is_empty());
            if !empty {
                return Err(Error::InvalidServerResponse(
                    "neither result nor error".into(),
                ));
            }
            if notification_method {
                // The seed's client sends `notifications/initialized` with an id and needs a body.
                let body = format!(r#"{{"jsonrpc":"2.0","id":{},"result":{{}}}}"#, id_text(id));
                return Ok(json_response(StatusCode::OK, body));
            }
            return Err(Error::InvalidServerResponse(
                "empty answer to a request".into(),
            ));
        }
    };
    if let Some(code) = view.error.as_ref().and_then(|e| e.code) {
        crate::audit::note_error_code(code);
    }
    let status = match view.error.as_ref().and_then(|e| e.code) {
        Some(code) if pinned && code == i64::from(ErrorCode::UNKNOWN_SESSION.0) => {
            StatusCode::NOT_FOUND
        }
        _ => StatusCode::OK,
    };
    let wanted = id_text(id);
    if view.id.map(RawValue::get) == Some(wanted.as_str()) {
        // The usual case: the bytes pass through untouched.
        let text: Box<str> = answer.into();
        return Ok(json_response(status, String::from(text)));
    }
    let mut obj: Map<String, Value> =
        serde_json::from_str(text).map_err(|e| Error::InvalidServerResponse(e.to_string()))?;
    obj.insert(
        "id".into(),
        serde_json::to_value(id).map_err(|e| Error::InvalidServerResponse(e.to_string()))?,
    );
    let body =
        serde_json::to_string(&obj).map_err(|e| Error::InvalidServerResponse(e.to_string()))?;
    Ok(json_response(status, body))
}

pub(crate) fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    async fn body_of(r: Response) -> (StatusCode, String) {
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn restores_the_client_id_and_passes_bytes_through() {
        let id = RequestId::from(7);
        let r = client_answer(
            raw(r#"{"jsonrpc":"2.0","id":7,"result":{"a": 1}}"#),
            &id,
            false,
            false,
        )
        .unwrap();
        assert_eq!(
            body_of(r).await,
            (
                StatusCode::OK,
                r#"{"jsonrpc":"2.0","id":7,"result":{"a": 1}}"#.into()
            )
        );
        let id = RequestId::from("x");
        let r = client_answer(
            raw(r#"{"jsonrpc":"2.0","id":99,"result":null}"#),
            &id,
            false,
            false,
        )
        .unwrap();
        let (status, body) = body_of(r).await;
        assert_eq!(status, StatusCode::OK);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["id"], "x");
        assert!(v.get("result").is_some());
    }

    #[tokio::test]
    async fn null_after_a_notification_method_is_an_empty_result() {
        let id = RequestId::from(2);
        let (status, body) = body_of(client_answer(raw("null"), &id, true, false).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, r#"{"jsonrpc":"2.0","id":2,"result":{}}"#);
        assert!(client_answer(raw("{}"), &id, false, false).is_err());
        assert!(client_answer(raw(r#""text""#), &id, false, false).is_err());
    }

    #[tokio::test]
    async fn unknown_session_maps_to_404_only_when_pinned() {
        let id = RequestId::from(1);
        let text =
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32001,"message":"unknown session"}}"#;
        let (status, _) = body_of(client_answer(raw(text), &id, false, true).unwrap()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = body_of(client_answer(raw(text), &id, false, false).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
    }
}
