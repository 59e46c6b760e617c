//! [`Server`]: the registries, the sessions, and [`Server::handle`], which answers any incoming
//! JSON-RPC message for a client session.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::Duration;

use futures::FutureExt;
use mcp_protocol::mcp::completion::CompleteParams;
use mcp_protocol::mcp::lifecycle::{
    ClientCapabilities, Implementation, InitializeResult, ListChangedCapability,
    ResourcesCapability, ServerCapabilities, SetLevelParams,
};
use mcp_protocol::mcp::notifications::{
    CancelledParams, LoggingLevel, LoggingMessageParams, ResourceUpdatedParams,
};
use mcp_protocol::mcp::prompts::{GetPromptParams, ListPromptsResult, Prompt};
use mcp_protocol::mcp::resources::{
    ListResourceTemplatesResult, ListResourcesResult, ReadResourceResult, Resource,
    ResourceTemplate, ResourceUriParams,
};
use mcp_protocol::mcp::stateless::{
    CacheScope, DiscoverResult, RequestMeta, ResultType, META_SERVER_INFO,
};
use mcp_protocol::mcp::tools::{CallToolParams, CallToolResult, ListToolsResult, Tool};
use mcp_protocol::mcp::{empty_result, methods, JsonObject, PaginatedParams};
use mcp_protocol::version::{self, SUPPORTED};
use mcp_protocol::{ErrorCode, ErrorObject, Message, Notification, Request, RequestId, Response};
use serde::Serialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::context::{LogFilter, RequestContext};
use crate::outbound::Outbound;
use crate::pending::PendingClientRequests;
use crate::registry::completion::{completion_handler, CompletionHandler, CompletionResult};
use crate::registry::prompts::{prompt_handler, PromptEntry, PromptRegistry, PromptResult};
use crate::registry::resources::{
    resource_handler, template_handler, ResourceEntry, ResourceRegistry, ResourceResult,
    TemplateEntry, TemplateRegistry, UriTemplate,
};
use crate::registry::tools::{tool_handler, ToolEntry, ToolRegistry};
use crate::registry::BoxFuture;
use crate::schema;
use crate::session::{Handshake, Session, SessionStore};
use crate::{ServerConfig, ToolError};

/// An MCP server: what it offers and the state of its client sessions.
///
/// Cheap to clone (an `Arc` inside); clones share everything. Constructing one spawns nothing;
/// a transport feeds it messages with [`Server::handle`], calling it concurrently for
/// concurrent messages: nothing inside serialises requests, so a slow tool never holds up a
/// `ping` or another call.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

struct Inner {
    config: ServerConfig,
    tools: ToolRegistry,
    resources: ResourceRegistry,
    templates: TemplateRegistry,
    prompts: PromptRegistry,
    /// `std::sync::RwLock`: read to clone the handler out, never held across an `.await`.
    completion: RwLock<Option<CompletionHandler>>,
    sessions: SessionStore,
    /// Requests this server sent to clients, waiting for their answers.
    pending: Arc<PendingClientRequests>,
    /// Running requests by (client session, request id), so `notifications/cancelled` finds them.
    in_flight: Mutex<HashMap<InFlightKey, (u64, CancellationToken)>>,
    /// Tells apart two runs of the same request id, so the first to finish removes only itself.
    in_flight_seq: AtomicU64,
    /// The transport's way to reach a client session outside any request (list changes,
    /// resource updates, server-wide log messages). `std::sync::RwLock`: read to clone the
    /// `Arc` out, never held while it runs.
    session_sink: RwLock<Option<SessionSink>>,
}

/// A transport's delivery of a message to a client session outside any request.
type SessionSink = Arc<dyn Fn(&str, Message) -> bool + Send + Sync>;

type InFlightKey = (Option<String>, RequestId);

/// Which era a request is served in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Era {
    /// 2025-11-25 and older: a session negotiated by `initialize` (or the shared sessionless one).
    Handshake,
    /// 2026-07-28: everything in the request's `_meta`, no session needed.
    Stateless,
}

impl Server {
    /// A server with this configuration and nothing registered yet.
    pub fn new(config: ServerConfig) -> Self {
        let sessions = SessionStore::new(config.session_idle_timeout, config.max_sessions);
        Server {
            inner: Arc::new(Inner {
                config,
                tools: ToolRegistry::default(),
                resources: ResourceRegistry::default(),
                templates: TemplateRegistry::default(),
                prompts: PromptRegistry::default(),
                completion: RwLock::new(None),
                sessions,
                pending: Arc::default(),
                in_flight: Mutex::new(HashMap::new()),
                in_flight_seq: AtomicU64::new(0),
                session_sink: RwLock::new(None),
            }),
        }
    }

    /// The configuration the server was built with.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// Registers a tool and its handler `|args, ctx| async move { .. }`; a tool registered again
    /// under the same name replaces the earlier one.
    pub fn register_tool<F, Fut>(&self, tool: impl Into<Tool>, handler: F) -> &Self
    where
        F: Fn(JsonObject, RequestContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<CallToolResult, ToolError>> + Send + 'static,
    {
        let tool = tool.into();
        let entry = ToolEntry {
            tool: tool.clone(),
            handler: tool_handler(handler),
        };
        if self.inner.tools.insert(tool.name.clone(), entry) {
            tracing::debug!(tool = %tool.name, "tool replaced");
        }
        self.notify_tools_list_changed();
        self
    }

    /// Removes a tool; `false` if there was none by that name. Sessions are told the list
    /// changed.
    pub fn remove_tool(&self, name: &str) -> bool {
        let removed = self.inner.tools.remove(name);
        if removed {
            self.notify_tools_list_changed();
        }
        removed
    }

    /// Every registered tool, in registration order.
    pub fn tools(&self) -> Vec<Tool> {
        self.inner
            .tools
            .page(None, usize::MAX, |e| e.tool.clone())
            .map(|(tools, _)| tools)
            .unwrap_or_default()
    }

    /// Registers a static resource and its handler `|uri, ctx| async move { .. }`.
    pub fn register_resource<F, Fut>(&self, resource: Resource, handler: F) -> &Self
    where
        F: Fn(String, RequestContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ResourceResult> + Send + 'static,
    {
        let key = resource.uri.clone();
        let entry = ResourceEntry {
            resource,
            handler: resource_handler(handler),
        };
        self.inner.resources.insert(key, entry);
        self.notify_resources_list_changed();
        self
    }

    /// Removes a static resource; `false` if there was none with that URI. Sessions are told
    /// the list changed.
    pub fn remove_resource(&self, uri: &str) -> bool {
        let removed = self.inner.resources.remove(uri);
        if removed {
            self.notify_resources_list_changed();
        }
        removed
    }

    /// Registers a resource template and its handler `|uri, variables, ctx| async move { .. }`,
    /// called for a `resources/read` of a URI that no static resource has and the template fits.
    pub fn register_resource_template<F, Fut>(
        &self,
        template: ResourceTemplate,
        handler: F,
    ) -> &Self
    where
        F: Fn(String, BTreeMap<String, String>, RequestContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ResourceResult> + Send + 'static,
    {
        let key = template.uri_template.clone();
        let entry = TemplateEntry {
            pattern: Arc::new(UriTemplate::parse(&template.uri_template)),
            template,
            handler: template_handler(handler),
        };
        self.inner.templates.insert(key, entry);
        self.notify_resources_list_changed();
        self
    }

    /// Registers a prompt and its handler `|arguments, ctx| async move { .. }`.
    pub fn register_prompt<F, Fut>(&self, prompt: impl Into<Prompt>, handler: F) -> &Self
    where
        F: Fn(BTreeMap<String, String>, RequestContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = PromptResult> + Send + 'static,
    {
        let prompt = prompt.into();
        let key = prompt.name.clone();
        let entry = PromptEntry {
            prompt,
            handler: prompt_handler(handler),
        };
        self.inner.prompts.insert(key, entry);
        self.notify_prompts_list_changed();
        self
    }

    /// Removes a prompt; `false` if there was none by that name. Sessions are told the list
    /// changed.
    pub fn remove_prompt(&self, name: &str) -> bool {
        let removed = self.inner.prompts.remove(name);
        if removed {
            self.notify_prompts_list_changed();
        }
        removed
    }

    /// Sets the `completion/complete` handler (and so offers the `completions` capability).
    pub fn set_completion_handler<F, Fut>(&self, handler: F) -> &Self
    where
        F: Fn(CompleteParams, RequestContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = CompletionResult> + Send + 'static,
    {
        *self
            .inner
            .completion
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(completion_handler(handler));
        self
    }

    /// Who the server is, as `initialize` and `server/discover` say.
    pub fn server_info(&self) -> Implementation {
        let mut info = Implementation::new(&self.inner.config.name, &self.inner.config.version);
        info.title.clone_from(&self.inner.config.title);
        info
    }

    /// What the server offers now: a feature is announced once something of it is registered.
    pub fn capabilities(&self) -> ServerCapabilities {
        let inner = &self.inner;
        ServerCapabilities {
            tools: (inner.tools.len() > 0).then(list_changed),
            resources: (inner.resources.len() + inner.templates.len() > 0).then(|| {
                ResourcesCapability {
                    subscribe: Some(true),
                    list_changed: Some(true),
                    ..Default::default()
                }
            }),
            prompts: (inner.prompts.len() > 0).then(list_changed),
            logging: Some(JsonObject::new()),
            completions: self.completion_handler().map(|_| JsonObject::new()),
            ..Default::default()
        }
    }

    /// Installs the transport's way to reach a client session outside any request: `sink(session,
    /// message)` delivers `message` to that session's client (over HTTP, its GET stream; through
    /// the proxy, a `{"client_session","message"}` envelope) and returns whether it could.
    ///
    /// The server calls it for list changes, resource updates and [`Server::log`]; a transport
    /// may also use it for a request's messages when the request's own stream cannot carry
    /// them. One sink per server: installing another replaces it. Without one, such messages
    /// are dropped (the notify methods return 0).
    pub fn set_session_sink(&self, sink: impl Fn(&str, Message) -> bool + Send + Sync + 'static) {
        *self
            .inner
            .session_sink
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(sink));
    }

    /// Removes the session sink (a transport shutting down).
    pub fn clear_session_sink(&self) {
        *self
            .inner
            .session_sink
            .write()
            .unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn session_sink(&self) -> Option<SessionSink> {
        self.inner
            .session_sink
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sends a message to one client session through the session sink; `false` when the
    /// session is unknown, no sink is installed or the sink could not deliver it.
    pub fn send_to_session(&self, session: &str, message: Message) -> bool {
        if !self.has_session(session) {
            return false;
        }
        self.session_sink()
            .is_some_and(|sink| sink(session, message))
    }

    /// Sends a notification to every session `pick` accepts; returns how many took it.
    fn broadcast(
        &self,
        method: &str,
        params: Option<Value>,
        pick: impl Fn(&Session) -> bool,
    ) -> usize {
        let Some(sink) = self.session_sink() else {
            return 0;
        };
        let message = Message::Notification(Notification::new(method, params));
        self.inner
            .sessions
            .all()
            .into_iter()
            .filter(|(_, s)| pick(s))
            .filter(|(id, _)| sink(id, message.clone()))
            .count()
    }

    /// Tells every client session that the tool list changed
    /// (`notifications/tools/list_changed`); returns how many sessions were reached.
    /// [`Server::register_tool`] and [`Server::remove_tool`] call it.
    pub fn notify_tools_list_changed(&self) -> usize {
        self.broadcast(methods::NOTIFICATION_TOOLS_LIST_CHANGED, None, |_| true)
    }

    /// Tells every client session that the resource list changed
    /// (`notifications/resources/list_changed`); returns how many sessions were reached.
    pub fn notify_resources_list_changed(&self) -> usize {
        self.broadcast(methods::NOTIFICATION_RESOURCES_LIST_CHANGED, None, |_| true)
    }

    /// Tells every client session that the prompt list changed
    /// (`notifications/prompts/list_changed`); returns how many sessions were reached.
    pub fn notify_prompts_list_changed(&self) -> usize {
        self.broadcast(methods::NOTIFICATION_PROMPTS_LIST_CHANGED, None, |_| true)
    }

    /// Tells the client sessions subscribed to `uri` (`resources/subscribe`) that it changed
    /// (`notifications/resources/updated`); returns how many sessions were reached.
    pub fn notify_resource_updated(&self, uri: &str) -> usize {
        let params = ResourceUpdatedParams {
            uri: uri.to_owned(),
            meta: None,
        };
        let params = serde_json::to_value(params).ok();
        self.broadcast(methods::NOTIFICATION_RESOURCES_UPDATED, params, |s| {
            s.is_subscribed(uri)
        })
    }

    /// Sends a log message not tied to a request (`notifications/message`) to every client
    /// session whose `logging/setLevel` lets it through; returns how many were reached.
    pub fn log(&self, level: LoggingLevel, logger: Option<&str>, data: impl Into<Value>) -> usize {
        let params = LoggingMessageParams {
            level,
            logger: logger.map(str::to_owned),
            data: data.into(),
        };
        let params = serde_json::to_value(params).ok();
        self.broadcast(methods::NOTIFICATION_MESSAGE, params, |s| {
            s.wants_log(level)
        })
    }

    /// How many client sessions the server holds (sessionless traffic is not counted).
    pub fn session_count(&self) -> usize {
        self.inner.sessions.count()
    }

    /// Whether the server knows this client session (it was initialized and has not ended).
    pub fn has_session(&self, session: &str) -> bool {
        self.inner.sessions.get(Some(session)).is_some()
    }

    /// Ends a client session (the proxy's `session_closed`): its state is dropped and its running
    /// requests are cancelled. `false` if the session was unknown.
    pub fn close_session(&self, session: &str) -> bool {
        self.inner.sessions.close(session)
    }

    /// Drops the client sessions idle for longer than
    /// [`ServerConfig::session_idle_timeout`]; returns how many. Sessions also expire lazily
    /// when next addressed, so calling this only bounds memory.
    pub fn sweep_idle(&self) -> usize {
        let n = self.inner.sessions.sweep();
        if n > 0 {
            tracing::debug!(expired = n, "idle client sessions dropped");
        }
        n
    }

    /// Spawns a task that calls [`Server::sweep_idle`] periodically until `cancel` fires (or the
    /// server is dropped). Needs a tokio runtime.
    pub fn spawn_expiry_task(&self, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let period = (self.inner.sessions.idle_timeout() / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(60));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    _ = tick.tick() => match weak.upgrade() {
                        Some(inner) => { Server { inner }.sweep_idle(); }
                        None => break,
                    },
                }
            }
        })
    }

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
        match message {
            Message::Request(request) => {
                let span =
                    tracing::debug_span!("mcp_request", method = %request.method, id = %request.id);
                Some(
                    self.handle_request(session, request, outbound)
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
    ) -> Response {
        let id = request.id.clone();
        match self.serve(session_id, request, outbound).await {
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
    ) -> Result<Value, ErrorObject> {
        if let Some(requested) = RequestMeta::protocol_version_of(request.params.as_ref()) {
            if version::is_stateless(requested) {
                return self.serve_stateless(session_id, request, outbound).await;
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

    async fn dispatch(
        &self,
        request: Request,
        ctx: RequestContext,
        era: Era,
    ) -> Result<Value, ErrorObject> {
        let page_size = self.inner.config.page_size;
        match request.method.as_str() {
            methods::PING => Ok(empty_result()),
            methods::SERVER_DISCOVER => to_value(self.discover()),
            methods::TOOLS_LIST => {
                let params: PaginatedParams = request.params_as()?;
                let (tools, next_cursor) =
                    self.inner
                        .tools
                        .page(params.cursor.as_deref(), page_size, |e| e.tool.clone())?;
                to_value(ListToolsResult {
                    tools,
                    next_cursor,
                    ..Default::default()
                })
            }
            methods::TOOLS_CALL => self.call_tool(&request, ctx).await,
            methods::RESOURCES_LIST => {
                let params: PaginatedParams = request.params_as()?;
                let (resources, next_cursor) =
                    self.inner
                        .resources
                        .page(params.cursor.as_deref(), page_size, |e| e.resource.clone())?;
                to_value(ListResourcesResult {
                    resources,
                    next_cursor,
                    ..Default::default()
                })
            }
            methods::RESOURCES_TEMPLATES_LIST => {
                let params: PaginatedParams = request.params_as()?;
                let (resource_templates, next_cursor) =
                    self.inner
                        .templates
                        .page(params.cursor.as_deref(), page_size, |e| e.template.clone())?;
                to_value(ListResourceTemplatesResult {
                    resource_templates,
                    next_cursor,
                    ..Default::default()
                })
            }
            methods::RESOURCES_READ => self.read_resource(&request, ctx).await,
            methods::PROMPTS_LIST => {
                let params: PaginatedParams = request.params_as()?;
                let (prompts, next_cursor) =
                    self.inner
                        .prompts
                        .page(params.cursor.as_deref(), page_size, |e| e.prompt.clone())?;
                to_value(ListPromptsResult {
                    prompts,
                    next_cursor,
                    ..Default::default()
                })
            }
            methods::PROMPTS_GET => self.get_prompt(&request, ctx).await,
            methods::COMPLETION_COMPLETE => {
                let Some(handler) = self.completion_handler() else {
                    return Err(ErrorObject::method_not_found(&request.method));
                };
                let params: CompleteParams = request.params_as()?;
                let result = guarded(|| handler(params, ctx)).await.map_err(|panic| {
                    tracing::error!("completion handler panicked: {panic}");
                    ErrorObject::internal_error("the completion handler failed")
                })??;
                to_value(result)
            }
            // Handshake-era methods a stateless request cannot use.
            methods::INITIALIZE
            | methods::LOGGING_SET_LEVEL
            | methods::RESOURCES_SUBSCRIBE
            | methods::RESOURCES_UNSUBSCRIBE
            | methods::NOTIFICATION_INITIALIZED
                if era == Era::Stateless =>
            {
                Err(ErrorObject::method_not_found(&request.method))
            }
            other => Err(ErrorObject::method_not_found(other)),
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

    /// The answer to `server/discover`.
    pub fn discover(&self) -> DiscoverResult {
        let mut meta = JsonObject::new();
        meta.insert(
            META_SERVER_INFO.into(),
            serde_json::to_value(self.server_info()).unwrap_or_default(),
        );
        DiscoverResult {
            supported_versions: SUPPORTED.iter().map(|v| (*v).to_owned()).collect(),
            capabilities: self.capabilities(),
            instructions: self.inner.config.instructions.clone(),
            result_type: ResultType::complete(),
            ttl_ms: u64::try_from(self.inner.config.discover_ttl.as_millis()).unwrap_or(u64::MAX),
            cache_scope: CacheScope::Public,
            meta: Some(meta),
            extra: JsonObject::new(),
        }
    }

    async fn call_tool(
        &self,
        request: &Request,
        ctx: RequestContext,
    ) -> Result<Value, ErrorObject> {
        let params: CallToolParams = request.params_as()?;
        let Some(entry) = self.inner.tools.get(&params.name) else {
            return Err(ErrorObject::invalid_params(format!(
                "unknown tool: {}",
                params.name
            )));
        };
        let args = params.arguments.unwrap_or_default();
        if let Err(why) = schema::validate_arguments(&entry.tool.input_schema, &args) {
            // The 2025-11-25 rule: input validation failures are tool errors the model can read.
            return to_value(CallToolResult::error(format!(
                "Invalid arguments for tool '{}': {why}",
                params.name
            )));
        }
        let handler = entry.handler;
        let result = match guarded(|| handler(args, ctx)).await {
            Ok(Ok(result)) => result,
            Ok(Err(error)) => CallToolResult::error(error.message()),
            Err(panic) => {
                tracing::error!(tool = %params.name, "tool handler panicked: {panic}");
                CallToolResult::error(format!(
                    "Tool '{}' failed with an internal error",
                    params.name
                ))
            }
        };
        to_value(result)
    }

    async fn read_resource(
        &self,
        request: &Request,
        ctx: RequestContext,
    ) -> Result<Value, ErrorObject> {
        let params: ResourceUriParams = request.params_as()?;
        let uri = params.uri;
        let run: Box<dyn FnOnce() -> BoxFuture<'static, ResourceResult> + Send> =
            if let Some(entry) = self.inner.resources.get(&uri) {
                let uri = uri.clone();
                Box::new(move || (entry.handler)(uri, ctx))
            } else if let Some((entry, vars)) =
                self.inner.templates.find_map(|e| e.pattern.matches(&uri))
            {
                let uri = uri.clone();
                Box::new(move || (entry.handler)(uri, vars, ctx))
            } else {
                return Err(
                    ErrorObject::new(ErrorCode::RESOURCE_NOT_FOUND, "Resource not found")
                        .with_data(json!({"uri": uri})),
                );
            };
        let contents = guarded(run).await.map_err(|panic| {
            tracing::error!(%uri, "resource handler panicked: {panic}");
            ErrorObject::internal_error("the resource handler failed")
        })??;
        to_value(ReadResourceResult {
            contents,
            ..Default::default()
        })
    }

    async fn get_prompt(
        &self,
        request: &Request,
        ctx: RequestContext,
    ) -> Result<Value, ErrorObject> {
        let params: GetPromptParams = request.params_as()?;
        let Some(entry) = self.inner.prompts.get(&params.name) else {
            return Err(ErrorObject::invalid_params(format!(
                "unknown prompt: {}",
                params.name
            )));
        };
        let args = params.arguments.unwrap_or_default();
        if let Some(missing) = entry.missing_argument(&args) {
            return Err(ErrorObject::invalid_params(format!(
                "missing required argument '{missing}' of prompt '{}'",
                params.name
            )));
        }
        let handler = entry.handler;
        let result = guarded(|| handler(args, ctx)).await.map_err(|panic| {
            tracing::error!(prompt = %params.name, "prompt handler panicked: {panic}");
            ErrorObject::internal_error("the prompt handler failed")
        })??;
        to_value(result)
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

    fn completion_handler(&self) -> Option<CompletionHandler> {
        self.inner
            .completion
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether the client of this session sent `notifications/initialized` (always `false` for
    /// an unknown session).
    pub fn is_session_ready(&self, session: Option<&str>) -> bool {
        self.inner
            .sessions
            .get(session)
            .is_some_and(|s: Arc<Session>| s.is_ready())
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.inner.config.name)
            .field("tools", &self.inner.tools.len())
            .field("sessions", &self.inner.sessions.count())
            .finish()
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

/// A feature whose list can change, and the server says so.
fn list_changed() -> ListChangedCapability {
    ListChangedCapability {
        list_changed: Some(true),
        ..Default::default()
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

fn to_value(result: impl Serialize) -> Result<Value, ErrorObject> {
    serde_json::to_value(result).map_err(ErrorObject::internal_error)
}

/// Runs a handler, turning a panic (while building its future or while polling it) into `Err`
/// with the panic's message, so one bad handler cannot take the server down.
async fn guarded<T>(start: impl FnOnce() -> BoxFuture<'static, T>) -> Result<T, String> {
    let future = std::panic::catch_unwind(AssertUnwindSafe(start)).map_err(panic_message)?;
    AssertUnwindSafe(future)
        .catch_unwind()
        .await
        .map_err(panic_message)
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_shareable<T: Clone + Send + Sync + 'static>(_: &T) {}
    fn is_send<T: Send>(_: &T) {}

    #[test]
    fn server_and_handle_future_can_cross_threads() {
        let server = Server::new(ServerConfig::new("t", "1"));
        is_shareable(&server);
        let message = Message::Request(Request::new(1, "ping", None));
        let future = server.handle(Some("s"), message, Outbound::none());
        is_send(&future);
    }
}
