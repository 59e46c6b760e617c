//! [`Server::handle`], the one entry point: a request is served in its era (a session from
//! `initialize`, or 2026-07-28's `_meta`) under a cancellation token kept in the in-flight table,
//! which `notifications/cancelled` looks up; a client's response goes to the request waiting
//! for it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};

use mcp_protocol::mcp::lifecycle::{
    ClientCapabilities, Implementation, InitializeResult, SetLevelParams,
};
use mcp_protocol::mcp::notifications::CancelledParams;
use mcp_protocol::mcp::resources::ResourceUriParams;
use mcp_protocol::mcp::stateless::{RequestMeta, ResultType};
use mcp_protocol::mcp::{empty_result, methods, JsonObject};
use mcp_protocol::version::{self, SUPPORTED};
use mcp_protocol::wire::Identity;
use mcp_protocol::{ErrorCode, ErrorObject, Message, Notification, Request, Response};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{to_value, Era, InFlightKey, Server};
use crate::context::{LogFilter, RequestContext};
use crate::outbound::Outbound;
use crate::session::Handshake;

impl Server {
    /// Processes any incoming JSON-RPC message of a client session (`None`: sessionless) and
    /// returns its answer: `Some(response)` for a request, `None` for a notification or for a
    /// response (a client's answer to a request the server sent, which it delivers to the
    /// waiting handler).
    ///
    /// `outbound` carries what the server sends while handling this message (progress, log
    /// messages, requests to the client). Call `handle` concurrently for concurrent messages;
    /// dropping the returned future abandons the request (and its handler).
    pub async fn handle(
        &self,
        session: Option<&str>,
        message: Message,
        outbound: Outbound,
    ) -> Option<Response> {
        self.handle_as(session, message, outbound, None).await
    }

    /// [`Server::handle`] for a caller the transport vouched for: `identity` reaches the
    /// handlers as [`RequestContext::identity`] (the reverse client passes what the proxy's
    /// OAuth layer put on the request item).
    pub async fn handle_as(
        &self,
        session: Option<&str>,
        message: Message,
        outbound: Outbound,
        identity: Option<Arc<Identity>>,
    ) -> Option<Response> {
        match message {
            Message::Request(request) => {
                let span =
                    tracing::debug_span!("mcp_request", method = %request.method, id = %request.id);
                Some(
                    self.handle_request(session, request, outbound, identity)
                        .instrument(span)
                        .await,
                )
            }
            Message::Notification(notification) => {
                self.handle_notification(session, notification);
                None
            }
            Message::Response(response) => {
                if !self.inner.pending.resolve(session, response) {
                    tracing::debug!("a client answered a request nobody waits for; ignored");
                }
                None
            }
        }
    }

    async fn handle_request(
        &self,
        session_id: Option<&str>,
        request: Request,
        outbound: Outbound,
        identity: Option<Arc<Identity>>,
    ) -> Response {
        let id = request.id.clone();
        match self.serve(session_id, request, outbound, identity).await {
            Ok(result) => Response::success(id, result),
            Err(error) => {
                tracing::debug!(code = %error.code, "request failed: {}", error.message);
                Response::error(Some(id), error)
            }
        }
    }

    async fn serve(
        &self,
        session_id: Option<&str>,
        request: Request,
        outbound: Outbound,
        identity: Option<Arc<Identity>>,
    ) -> Result<Value, ErrorObject> {
        if let Some(requested) = RequestMeta::protocol_version_of(request.params.as_ref()) {
            if version::is_stateless(requested) {
                return self
                    .serve_stateless(session_id, request, outbound, identity)
                    .await;
            }
        }
        match request.method.as_str() {
            // A description of the server needs no session, whatever the era.
            methods::SERVER_DISCOVER => return to_value(self.discover()),
            methods::INITIALIZE => return self.initialize(session_id, &request),
            _ => {}
        }
        let session = self
            .inner
            .sessions
            .get(session_id)
            .ok_or_else(unknown_session)?;
        session.touch();
        match request.method.as_str() {
            methods::NOTIFICATION_INITIALIZED => {
                // The seed's client sends this notification with an id: answer it.
                session.mark_ready();
                Ok(empty_result())
            }
            methods::LOGGING_SET_LEVEL => {
                let params: SetLevelParams = request.params_as()?;
                session.set_log_level(params.level);
                Ok(empty_result())
            }
            methods::RESOURCES_SUBSCRIBE | methods::RESOURCES_UNSUBSCRIBE
                if self.inner.resources.len() + self.inner.templates.len() == 0 =>
            {
                // Not offered (no `resources` capability) until a resource exists.
                Err(ErrorObject::method_not_found(&request.method))
            }
            methods::RESOURCES_SUBSCRIBE => {
                // Any URI may be watched, a templated one or one that does not exist yet.
                let params: ResourceUriParams = request.params_as()?;
                session.subscribe(params.uri);
                Ok(empty_result())
            }
            methods::RESOURCES_UNSUBSCRIBE => {
                let params: ResourceUriParams = request.params_as()?;
                session.unsubscribe(&params.uri);
                Ok(empty_result())
            }
            _ => {
                let _busy = session.begin_request();
                let cancel = session.cancel_token().child_token();
                let ctx = RequestContext {
                    session_id: session_id.map(Arc::from),
                    request_id: request.id.clone(),
                    cancel,
                    meta: request_meta(&request),
                    protocol_version: session
                        .protocol_version()
                        .unwrap_or_else(|| version::LATEST_HANDSHAKE.to_owned()),
                    client_capabilities: session.client_capabilities(),
                    client_info: session.client_info(),
                    log_filter: LogFilter::Session(Arc::clone(&session)),
                    outbound,
                    pending: Arc::clone(&self.inner.pending),
                    identity,
                };
                self.run(session_id, request, ctx, Era::Handshake).await
            }
        }
    }

    /// A 2026-07-28 request: everything the server needs is in its `_meta`.
    async fn serve_stateless(
        &self,
        session_id: Option<&str>,
        request: Request,
        outbound: Outbound,
        identity: Option<Arc<Identity>>,
    ) -> Result<Value, ErrorObject> {
        let requested = RequestMeta::protocol_version_of(request.params.as_ref())
            .unwrap_or_default()
            .to_owned();
        if !version::is_supported(&requested) {
            return Err(ErrorObject::new(
                ErrorCode::UNSUPPORTED_PROTOCOL_VERSION,
                format!("Unsupported protocol version: {requested}"),
            )
            .with_data(json!({"supported": SUPPORTED, "requested": requested})));
        }
        let meta_value = request
            .params
            .as_ref()
            .and_then(|p| p.get("_meta"))
            .cloned()
            .unwrap_or_default();
        let meta: RequestMeta = serde_json::from_value(meta_value)
            .map_err(|e| ErrorObject::invalid_params(format!("_meta: {e}")))?;
        let ctx = RequestContext {
            session_id: session_id.map(Arc::from),
            request_id: request.id.clone(),
            cancel: CancellationToken::new(),
            meta: request_meta(&request),
            protocol_version: requested,
            client_capabilities: Some(meta.client_capabilities),
            client_info: meta.client_info,
            log_filter: LogFilter::PerRequest(meta.log_level),
            outbound,
            pending: Arc::clone(&self.inner.pending),
            identity,
        };
        let cacheable = matches!(
            request.method.as_str(),
            methods::TOOLS_LIST
                | methods::PROMPTS_LIST
                | methods::RESOURCES_LIST
                | methods::RESOURCES_TEMPLATES_LIST
                | methods::RESOURCES_READ
        );
        let mut result = self.run(session_id, request, ctx, Era::Stateless).await?;
        if let Value::Object(obj) = &mut result {
            obj.entry("resultType")
                .or_insert_with(|| ResultType::COMPLETE.into());
            if cacheable {
                // 2026-07-28 requires caching directives on these results: immediately stale and
                // private, since a list may depend on who asks.
                obj.entry("ttlMs").or_insert_with(|| 0.into());
                obj.entry("cacheScope").or_insert_with(|| "private".into());
            }
        }
        Ok(result)
    }

    /// Runs a request's method under its cancellation token, findable by `notifications/cancelled`.
    async fn run(
        &self,
        session_id: Option<&str>,
        request: Request,
        ctx: RequestContext,
        era: Era,
    ) -> Result<Value, ErrorObject> {
        let cancel = ctx.cancel.clone();
        let _registered = self.track((session_id.map(str::to_owned), request.id.clone()), &cancel);
        // A transport that drops this future (its client closed the response stream) cancels
        // the token too, so work the handler handed off stops with it.
        let dropped = cancel.clone().drop_guard();
        let result = tokio::select! {
            biased;
            () = cancel.cancelled() => Err(ErrorObject::request_cancelled()),
            result = self.dispatch(request, ctx, era) => result,
        };
        dropped.disarm();
        result
    }

    fn in_flight(&self) -> MutexGuard<'_, HashMap<InFlightKey, (u64, CancellationToken)>> {
        self.inner
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn track(&self, key: InFlightKey, cancel: &CancellationToken) -> InFlightGuard {
        let seq = self.inner.in_flight_seq.fetch_add(1, Ordering::Relaxed);
        self.in_flight().insert(key.clone(), (seq, cancel.clone()));
        InFlightGuard {
            server: self.clone(),
            key: Some(key),
            seq,
        }
    }

    fn initialize(
        &self,
        session_id: Option<&str>,
        request: &Request,
    ) -> Result<Value, ErrorObject> {
        let params = request.params.clone().unwrap_or_else(empty_result);
        let Some(requested) = params.get("protocolVersion").and_then(Value::as_str) else {
            return Err(ErrorObject::invalid_params(
                "initialize needs \"protocolVersion\" (a string)",
            ));
        };
        let client_capabilities: ClientCapabilities = match params.get("capabilities") {
            Some(c) => serde_json::from_value(c.clone())
                .map_err(|e| ErrorObject::invalid_params(format!("capabilities: {e}")))?,
            None => ClientCapabilities::default(),
        };
        // The spec requires clientInfo; older clients omit it, and nothing here depends on it.
        let client_info: Implementation = params
            .get("clientInfo")
            .and_then(|c| serde_json::from_value(c.clone()).ok())
            .unwrap_or_default();
        let negotiated = version::negotiate(requested, &[]);
        let session = self
            .inner
            .sessions
            .get_or_create(session_id)
            .map_err(ErrorObject::internal_error)?;
        tracing::debug!(requested, negotiated = %negotiated, client = %client_info.name, "initialize");
        session.initialize(Handshake {
            protocol_version: negotiated.0.clone(),
            client_info,
            client_capabilities,
        });
        to_value(InitializeResult {
            protocol_version: negotiated.0,
            capabilities: self.capabilities(),
            server_info: self.server_info(),
            instructions: self.inner.config.instructions.clone(),
            ..Default::default()
        })
    }

    fn handle_notification(&self, session_id: Option<&str>, notification: Notification) {
        let session = self.inner.sessions.get(session_id);
        if let Some(s) = &session {
            s.touch();
        }
        match notification.method.as_str() {
            methods::NOTIFICATION_INITIALIZED => match session {
                Some(s) => s.mark_ready(),
                None => tracing::debug!("notifications/initialized for an unknown session"),
            },
            methods::NOTIFICATION_CANCELLED => {
                // Looked up by (session, request id), so a client can only cancel its own
                // requests; this also finds stateless requests, which have no session state.
                let Ok(params) = notification.params_as::<CancelledParams>() else {
                    tracing::debug!("malformed notifications/cancelled ignored");
                    return;
                };
                let Some(request_id) = params.request_id else {
                    return;
                };
                let key = (session_id.map(str::to_owned), request_id);
                let token = self.in_flight().get(&key).map(|(_, t)| t.clone());
                match token {
                    Some(t) => {
                        tracing::debug!(reason = ?params.reason, "request cancelled by the client");
                        t.cancel();
                    }
                    None => tracing::debug!("cancellation of a request that is not running"),
                }
            }
            other => tracing::debug!(method = other, "notification ignored"),
        }
    }
}

/// Removes a request from the in-flight table when it ends, however it ends.
struct InFlightGuard {
    server: Server,
    key: Option<InFlightKey>,
    seq: u64,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut in_flight = self.server.in_flight();
            if in_flight.get(&key).is_some_and(|(seq, _)| *seq == self.seq) {
                in_flight.remove(&key);
            }
        }
    }
}

/// The "unknown session" error, with a hint of what to do.
fn unknown_session() -> ErrorObject {
    ErrorObject::unknown_session().with_data(json!({
        "detail": "the server has no such session (never initialized, closed or expired); \
                   send initialize to start a new one"
    }))
}

/// The request's `_meta` object, if any.
fn request_meta(request: &Request) -> Option<JsonObject> {
    request.params.as_ref()?.get("_meta")?.as_object().cloned()
}
