//! [`Client`]: one connection to one MCP endpoint.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mcp_protocol::jsonrpc::{
    ErrorObject, Message, Notification, Outcome, Request, RequestId, Response,
};
use mcp_protocol::mcp::lifecycle::{
    ClientCapabilities, Implementation, InitializeParams, InitializeResult,
};
use mcp_protocol::mcp::methods;
use mcp_protocol::mcp::prompts::{GetPromptResult, ListPromptsResult, Prompt};
use mcp_protocol::mcp::resources::{ListResourcesResult, ReadResourceResult, Resource};
use mcp_protocol::mcp::tools::{CallToolResult, ListToolsResult, Tool};
use mcp_protocol::sse::{SseEvent, SseParser};
use mcp_protocol::streamable::{
    EVENT_STREAM, JSON, LAST_EVENT_ID_HEADER, PROTOCOL_VERSION_HEADER, SESSION_ID_HEADER,
};
use mcp_protocol::version;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::Error;

/// The path of the Streamable HTTP endpoint on a proxy or server base URL.
const MCP_PATH: &str = "/mcp";

/// The `Accept` header of a Streamable HTTP POST: the spec asks for both.
const ACCEPT_BOTH: &str = "application/json, text/event-stream";

/// How often in a row an event stream may end before its response without delivering a
/// message in between, before the client gives up resuming it.
const MAX_RESUMES: u32 = 5;

/// The longest life of the session's GET stream: it idles for hours by design, so
/// [`ClientOptions::timeout`] (meant for one answer) does not apply to it.
const SESSION_STREAM_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// How long to wait before resuming a stream when the server gave no `retry:` field.
const DEFAULT_RETRY: Duration = Duration::from_millis(500);

/// Which HTTP transport a [`Client`] speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// The seed's `POST /message`: one JSON answer per POST, no session needed.
    Message,
    /// MCP Streamable HTTP (2025-11-25): JSON or SSE answers, `Mcp-Session-Id` from
    /// `initialize` on every later request, `DELETE` on close.
    Streamable,
}

impl Transport {
    /// The transport a URL implies: a path ending in `/mcp` is Streamable HTTP, anything else
    /// the seed's `/message`.
    pub fn for_url(url: &str) -> Transport {
        let path = reqwest::Url::parse(url)
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        if path.ends_with(MCP_PATH) {
            Transport::Streamable
        } else {
            Transport::Message
        }
    }
}

/// Called with each notification the server sends on a response stream (progress, logging,
/// list changes) before the response itself.
pub type NotificationHandler = Arc<dyn Fn(Notification) + Send + Sync>;

/// A boxed future that can move between threads (`BoxFuture<'static, T>`): mcp-protocol's.
pub use mcp_protocol::BoxFuture;

/// Answers a request the server sends the client (`sampling/createMessage`,
/// `elicitation/create`, `roots/list`, ...): called with the method and its params, it returns
/// the result or the JSON-RPC error to send back. Build one with [`request_handler`].
pub type RequestHandler = Arc<
    dyn Fn(String, Option<Value>) -> BoxFuture<'static, Result<Value, ErrorObject>> + Send + Sync,
>;

/// A [`RequestHandler`] from an async closure:
///
/// ```
/// use mcp_client::{request_handler, ClientOptions};
/// use mcp_protocol::ErrorObject;
/// use serde_json::json;
///
/// let options = ClientOptions {
///     on_request: Some(request_handler(|method, _params| async move {
///         match method.as_str() {
///             "sampling/createMessage" => Ok(json!({
///                 "role": "assistant",
///                 "content": {"type": "text", "text": "42"},
///                 "model": "by-hand",
///             })),
///             other => Err(ErrorObject::method_not_found(other)),
///         }
///     })),
///     capabilities: serde_json::from_value(json!({"sampling": {}})).unwrap(),
///     ..ClientOptions::default()
/// };
/// ```
pub fn request_handler<F, Fut>(handler: F) -> RequestHandler
where
    F: Fn(String, Option<Value>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, ErrorObject>> + Send + 'static,
{
    Arc::new(move |method, params| Box::pin(handler(method, params)))
}

/// How to connect.
#[derive(Clone)]
pub struct ClientOptions {
    /// Longest wait for one answer; longer than the proxy's request timeout (300 s) by default,
    /// so the proxy's own "request timeout" error is what the user sees.
    pub timeout: Duration,
    /// Sent as `Authorization: Bearer <token>` when set.
    pub token: Option<String>,
    /// PEM certificates (one or more) trusted for `https://` besides the built-in public
    /// roots: the CA of a private deployment, or a self-signed proxy certificate.
    pub ca_cert: Option<String>,
    /// The protocol version offered in `initialize`.
    pub protocol_version: String,
    /// Who this client says it is.
    pub client_info: Implementation,
    /// The transport; `None` picks it from the URL ([`Transport::for_url`]).
    pub transport: Option<Transport>,
    /// Receives the server's notifications that arrive on response streams; they are
    /// dropped when unset.
    pub on_notification: Option<NotificationHandler>,
    /// Answers the server's requests (sampling, elicitation, roots) that arrive on response
    /// streams and on [`Client::listen`]; when unset, each gets "method not found". `ping` is
    /// always answered by the client itself.
    pub on_request: Option<RequestHandler>,
    /// What the client declares in `initialize`: declare `sampling`, `elicitation` or `roots`
    /// for the requests [`ClientOptions::on_request`] answers, or servers will not send them.
    pub capabilities: ClientCapabilities,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("timeout", &self.timeout)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_cert", &self.ca_cert.is_some())
            .field("protocol_version", &self.protocol_version)
            .field("client_info", &self.client_info)
            .field("transport", &self.transport)
            .field("on_notification", &self.on_notification.is_some())
            .field("on_request", &self.on_request.is_some())
            .field("capabilities", &self.capabilities)
            .finish()
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(330),
            token: None,
            ca_cert: None,
            protocol_version: version::LATEST_HANDSHAKE.to_owned(),
            client_info: Implementation::new("mcp-client", env!("CARGO_PKG_VERSION")),
            transport: None,
            on_notification: None,
            on_request: None,
            capabilities: ClientCapabilities::default(),
        }
    }
}

/// What the server gave at `initialize`, sent back on every later request.
#[derive(Clone, Debug, Default)]
struct SessionState {
    /// The `Mcp-Session-Id` the server assigned, if any.
    id: Option<String>,
    /// The negotiated protocol version (Streamable HTTP sends it as `MCP-Protocol-Version`).
    version: Option<String>,
}

/// The answer to one POST, before it is read.
enum Answer {
    /// 202 or 204: accepted, nothing to read.
    Empty,
    /// A JSON body.
    Json(Vec<u8>),
    /// An SSE stream still being received.
    Stream(reqwest::Response),
}

/// A client of one MCP endpoint. Cheap to share: every method takes `&self`, so many calls
/// can be in flight at once.
pub struct Client {
    http: reqwest::Client,
    endpoint: reqwest::Url,
    transport: Transport,
    options: ClientOptions,
    next_id: AtomicI64,
    /// A std mutex: it is held only to copy or replace the state, never across an `.await`.
    session: Mutex<SessionState>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint.as_str())
            .field("transport", &self.transport)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `url`: a proxy base URL (`http://host:9000`, which means its `/message`
    /// route), a `/message` endpoint (`http://host:9000/servers/alpha/message`) or a Streamable
    /// HTTP endpoint (`http://host:9000/mcp`).
    pub fn connect(url: &str) -> Result<Client, Error> {
        Client::with_options(url, ClientOptions::default())
    }

    /// A client for `url` with `options`.
    pub fn with_options(url: &str, options: ClientOptions) -> Result<Client, Error> {
        let invalid = |reason: String| Error::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        let mut endpoint = reqwest::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
        if !matches!(endpoint.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https".into()));
        }
        let transport = options.transport.unwrap_or_else(|| Transport::for_url(url));
        if endpoint.path() == "/" || endpoint.path().is_empty() {
            endpoint.set_path(match transport {
                Transport::Message => mcp_protocol::wire::MESSAGE_PATH,
                Transport::Streamable => MCP_PATH,
            });
        }
        let mut headers = HeaderMap::new();
        if let Some(token) = &options.token {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| invalid("the token is not a valid header value".into()))?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let mut http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(options.timeout)
            .tcp_nodelay(true);
        if let Some(pem) = &options.ca_cert {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| invalid(format!("CA certificate: {e}")))?;
            if certs.is_empty() {
                return Err(invalid("CA certificate: no PEM CERTIFICATE block".into()));
            }
            for cert in certs {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http.build()?;
        Ok(Client {
            http,
            endpoint,
            transport,
            options,
            next_id: AtomicI64::new(1),
            session: Mutex::new(SessionState::default()),
        })
    }

    /// The endpoint every message is posted to.
    pub fn endpoint(&self) -> &str {
        self.endpoint.as_str()
    }

    /// The transport this client speaks.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The session id the server assigned, if any.
    pub fn session_id(&self) -> Option<String> {
        self.state().id
    }

    fn state(&self) -> SessionState {
        self.session.lock().expect("session lock").clone()
    }

    /// Ends the session: on Streamable HTTP, `DELETE`s it so the server can free it at once
    /// (a server that does not allow that answers 405, which is fine). Afterwards the client
    /// needs [`Client::initialize`] again.
    pub async fn close(&self) -> Result<(), Error> {
        let state = std::mem::take(&mut *self.session.lock().expect("session lock"));
        let (Transport::Streamable, Some(id)) = (self.transport, state.id) else {
            return Ok(());
        };
        let mut req = self
            .http
            .delete(self.endpoint.clone())
            .header(SESSION_ID_HEADER, id);
        if let Some(v) = state.version {
            req = req.header(PROTOCOL_VERSION_HEADER, v);
        }
        let resp = req.send().await?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => Ok(()),
            s => Err(status_error(s, &resp.bytes().await?)),
        }
    }

    /// Starts the session: `initialize`, then `notifications/initialized`.
    ///
    /// Any earlier session is forgotten first, so this is also how to recover from
    /// [`Error::SessionExpired`].
    pub async fn initialize(&self) -> Result<InitializeResult, Error> {
        *self.session.lock().expect("session lock") = SessionState::default();
        let params = InitializeParams {
            protocol_version: self.options.protocol_version.clone(),
            capabilities: self.options.capabilities.clone(),
            client_info: self.options.client_info.clone(),
            meta: None,
            extra: Default::default(),
        };
        let result: InitializeResult = self
            .request_as(
                methods::INITIALIZE,
                Some(serde_json::to_value(params).expect("serializable")),
            )
            .await?;
        if !version::is_supported(&result.protocol_version) {
            return Err(Error::InvalidResponse(format!(
                "the server chose protocol version {}, which this client does not speak",
                result.protocol_version
            )));
        }
        self.session.lock().expect("session lock").version = Some(result.protocol_version.clone());
        self.notify(methods::NOTIFICATION_INITIALIZED, None).await?;
        Ok(result)
    }

    /// Every tool, following `nextCursor` across pages.
    pub async fn list_tools(&self) -> Result<Vec<Tool>, Error> {
        self.paginate(methods::TOOLS_LIST, |page: ListToolsResult| {
            (page.tools, page.next_cursor)
        })
        .await
    }

    /// Calls a tool. A tool's own failure is `Ok` with `isError: true`; see [`CallToolResult::is_error`].
    pub async fn call_tool(&self, name: &str, arguments: Value) -> Result<CallToolResult, Error> {
        self.request_as(
            methods::TOOLS_CALL,
            Some(json!({"name": name, "arguments": arguments})),
        )
        .await
    }

    /// Checks the server answers.
    pub async fn ping(&self) -> Result<(), Error> {
        self.request(methods::PING, None).await.map(|_| ())
    }

    /// Every resource, following pagination.
    pub async fn list_resources(&self) -> Result<Vec<Resource>, Error> {
        self.paginate(methods::RESOURCES_LIST, |page: ListResourcesResult| {
            (page.resources, page.next_cursor)
        })
        .await
    }

    /// Reads one resource.
    pub async fn read_resource(&self, uri: &str) -> Result<ReadResourceResult, Error> {
        self.request_as(methods::RESOURCES_READ, Some(json!({"uri": uri})))
            .await
    }

    /// Every prompt, following pagination.
    pub async fn list_prompts(&self) -> Result<Vec<Prompt>, Error> {
        self.paginate(methods::PROMPTS_LIST, |page: ListPromptsResult| {
            (page.prompts, page.next_cursor)
        })
        .await
    }

    /// Gets a prompt with its arguments filled in.
    pub async fn get_prompt(&self, name: &str, arguments: Value) -> Result<GetPromptResult, Error> {
        self.request_as(
            methods::PROMPTS_GET,
            Some(json!({"name": name, "arguments": arguments})),
        )
        .await
    }

    /// Sends a notification (no answer expected beyond the HTTP acknowledgement).
    pub async fn notify(&self, method: &str, params: Option<Value>) -> Result<(), Error> {
        let message = Message::Notification(Notification::new(method, params));
        // A server may answer a notification with a stream; nothing on it is awaited.
        self.post(&message).await.map(|_| ())
    }

    /// Sends a request and returns its result, or the JSON-RPC error as [`Error::Rpc`].
    pub async fn request(&self, method: &str, params: Option<Value>) -> Result<Value, Error> {
        let id = RequestId::from(self.next_id.fetch_add(1, Ordering::Relaxed));
        let message = Message::Request(Request::new(id.clone(), method, params));
        let response = match self.post(&message).await? {
            Answer::Empty => {
                return Err(Error::InvalidResponse(format!(
                    "no body in the answer to {method}"
                )))
            }
            Answer::Json(body) => {
                let response = match Message::parse(&body) {
                    Ok(Message::Response(r)) => r,
                    Ok(other) => {
                        return Err(Error::InvalidResponse(format!(
                            "expected a response to {method}, got {}",
                            other.method().unwrap_or("something else")
                        )))
                    }
                    Err(e) => {
                        return Err(Error::InvalidResponse(format!("answer to {method}: {e}")))
                    }
                };
                if response.id.as_ref() != Some(&id) {
                    return Err(Error::InvalidResponse(format!(
                        "answer to request {id} carries id {}",
                        response.id.map_or("null".to_owned(), |i| i.to_string())
                    )));
                }
                response
            }
            Answer::Stream(stream) => self.read_stream(stream, &id, method).await?,
        };
        match response.outcome {
            Outcome::Result(v) => Ok(v),
            Outcome::Error(e) => Err(Error::Rpc(e)),
        }
    }

    /// Sends a request and decodes its result as `T`.
    pub async fn request_as<T: DeserializeOwned>(
        &self,
        method: &str,
        params: Option<Value>,
    ) -> Result<T, Error> {
        let value = self.request(method, params).await?;
        serde_json::from_value(value)
            .map_err(|e| Error::InvalidResponse(format!("result of {method}: {e}")))
    }

    async fn paginate<P: DeserializeOwned, T>(
        &self,
        method: &str,
        split: impl Fn(P) -> (Vec<T>, Option<String>),
    ) -> Result<Vec<T>, Error> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        // A server that hands out the same cursor forever must not hang the client.
        for _ in 0..10_000 {
            let params = cursor.as_ref().map(|c| json!({"cursor": c}));
            let (items, next) = split(self.request_as(method, params).await?);
            all.extend(items);
            match next {
                Some(next) if Some(&next) != cursor.as_ref() => cursor = Some(next),
                Some(_) => {
                    return Err(Error::InvalidResponse(format!(
                        "{method} returned the same cursor twice"
                    )))
                }
                None => return Ok(all),
            }
        }
        Err(Error::InvalidResponse(format!("{method}: too many pages")))
    }

    /// Adds the session headers every request after `initialize` carries.
    fn with_session(&self, mut req: reqwest::RequestBuilder) -> (reqwest::RequestBuilder, bool) {
        let state = self.state();
        let had_session = state.id.is_some();
        if let Some(id) = state.id {
            req = req.header(SESSION_ID_HEADER, id);
        }
        if let (Transport::Streamable, Some(v)) = (self.transport, state.version) {
            req = req.header(PROTOCOL_VERSION_HEADER, v);
        }
        (req, had_session)
    }

    /// Posts one message and sorts the answer: nothing (202), JSON (200) or an event stream.
    async fn post(&self, message: &Message) -> Result<Answer, Error> {
        let accept = match self.transport {
            Transport::Message => JSON,
            Transport::Streamable => ACCEPT_BOTH,
        };
        let req = self
            .http
            .post(self.endpoint.clone())
            .header(ACCEPT, accept)
            .header(CONTENT_TYPE, JSON)
            .body(serde_json::to_vec(message).expect("messages serialize"));
        let (req, had_session) = self.with_session(req);
        let resp = req.send().await?;
        let status = resp.status();
        if status.is_success() {
            if let Some(session) = resp.headers().get(SESSION_ID_HEADER) {
                if let Ok(session) = session.to_str() {
                    self.session.lock().expect("session lock").id = Some(session.to_owned());
                }
            }
        }
        if status == StatusCode::NOT_FOUND && had_session {
            return Err(self.expired());
        }
        match status.as_u16() {
            202 | 204 => Ok(Answer::Empty),
            200 if is_event_stream(&resp) => Ok(Answer::Stream(resp)),
            200 => Ok(Answer::Json(resp.bytes().await?.to_vec())),
            _ => Err(status_error(status, &resp.bytes().await?)),
        }
    }

    /// The server no longer knows the session: forget it, so the next `initialize` starts a
    /// new one instead of presenting the dead id again.
    fn expired(&self) -> Error {
        *self.session.lock().expect("session lock") = SessionState::default();
        tracing::debug!("the server forgot the session; initialize again");
        Error::SessionExpired
    }

    /// Reads an event stream until the response to `id`, handing notifications to the
    /// callback and answering the server's requests on the way. A stream that ends early
    /// after giving event ids is resumed with `GET` and `Last-Event-ID`, as 2025-11-25 allows.
    async fn read_stream(
        &self,
        mut stream: reqwest::Response,
        id: &RequestId,
        method: &str,
    ) -> Result<Response, Error> {
        let mut last_event: Option<String> = None;
        let mut retry = DEFAULT_RETRY;
        let mut fruitless = 0;
        loop {
            let mut parser = SseParser::new();
            while let Some(chunk) = stream.chunk().await? {
                for event in parser.push(&chunk) {
                    if event.id.is_some() {
                        last_event = event.id;
                    }
                    if let Some(ms) = event.retry {
                        retry = Duration::from_millis(ms);
                    }
                    // An event without data primes the stream with an id to resume from.
                    if event.data.is_empty() {
                        continue;
                    }
                    fruitless = 0;
                    if let Some(response) = self.on_stream_message(&event.data, id).await? {
                        return Ok(response);
                    }
                }
            }
            let Some(last) = last_event.clone() else {
                return Err(Error::InvalidResponse(format!(
                    "the event stream for {method} ended before its response"
                )));
            };
            fruitless += 1;
            if fruitless > MAX_RESUMES {
                return Err(Error::InvalidResponse(format!(
                    "the event stream for {method} kept ending without its response"
                )));
            }
            // The server's `retry:` is how long it asked us to wait: a backoff, not a sync.
            tokio::time::sleep(retry).await;
            stream = self.resume(&last).await?;
        }
    }

    /// Reopens a stream after `last_event` with `GET` and `Last-Event-ID`.
    async fn resume(&self, last_event: &str) -> Result<reqwest::Response, Error> {
        let req = self
            .http
            .get(self.endpoint.clone())
            .header(ACCEPT, EVENT_STREAM)
            .header(LAST_EVENT_ID_HEADER, last_event);
        let (req, had_session) = self.with_session(req);
        let resp = req.send().await?;
        match resp.status() {
            StatusCode::NOT_FOUND if had_session => Err(self.expired()),
            StatusCode::OK if is_event_stream(&resp) => Ok(resp),
            StatusCode::OK => Err(Error::InvalidResponse(
                "resuming a stream did not return an event stream".into(),
            )),
            s => Err(status_error(s, &resp.bytes().await?)),
        }
    }

    /// Opens the session's own stream (`GET` with `Accept: text/event-stream`), where the server
    /// sends what belongs to no request: list changes, resource updates, log lines, and its
    /// requests while the client takes JSON answers. Returns once the server has accepted the
    /// stream; read it with [`ServerStream::next`], or hand it to [`Client::listen`]. The
    /// stream ends after a day at the latest; open it again to go on listening.
    pub async fn open_stream(&self) -> Result<ServerStream, Error> {
        let req = self
            .http
            .get(self.endpoint.clone())
            .header(ACCEPT, EVENT_STREAM)
            .timeout(SESSION_STREAM_LIFETIME);
        let (req, had_session) = self.with_session(req);
        let resp = req.send().await?;
        match resp.status() {
            StatusCode::NOT_FOUND if had_session => Err(self.expired()),
            StatusCode::OK if is_event_stream(&resp) => Ok(ServerStream {
                response: resp,
                parser: SseParser::new(),
                ready: VecDeque::new(),
                last_event_id: None,
            }),
            StatusCode::OK => Err(Error::InvalidResponse(
                "the session's stream is not an event stream".into(),
            )),
            s => Err(status_error(s, &resp.bytes().await?)),
        }
    }

    /// Serves a stream from [`Client::open_stream`] until the server ends it: notifications go
    /// to [`ClientOptions::on_notification`], requests are answered as on response streams.
    pub async fn listen(&self, mut stream: ServerStream) -> Result<(), Error> {
        while let Some(message) = stream.next().await? {
            match message {
                Message::Notification(n) => {
                    if let Some(handler) = &self.options.on_notification {
                        handler(n);
                    }
                }
                Message::Request(r) => self.answer_server_request(r).await,
                Message::Response(r) => {
                    tracing::warn!(id = ?r.id, "ignoring a response on the session's stream");
                }
            }
        }
        Ok(())
    }

    /// Handles one message from a stream; returns it when it is the awaited response.
    async fn on_stream_message(
        &self,
        data: &str,
        id: &RequestId,
    ) -> Result<Option<Response>, Error> {
        let message = Message::parse(data.as_bytes())
            .map_err(|e| Error::InvalidResponse(format!("event stream message: {e}")))?;
        match message {
            Message::Response(r) if r.id.as_ref() == Some(id) => return Ok(Some(r)),
            Message::Response(r) => {
                tracing::warn!(id = ?r.id, "ignoring a response to another request on a stream");
            }
            Message::Notification(n) => {
                if let Some(handler) = &self.options.on_notification {
                    handler(n);
                }
            }
            Message::Request(r) => self.answer_server_request(r).await,
        }
        Ok(None)
    }

    /// Answers a request the server sent on a stream: `ping` here, the rest by
    /// [`ClientOptions::on_request`], or "method not found" without one rather than no answer,
    /// which would leave the server waiting.
    async fn answer_server_request(&self, request: Request) {
        let outcome = match (&self.options.on_request, request.method.as_str()) {
            (_, methods::PING) => Ok(json!({})),
            (Some(handler), _) => handler(request.method.clone(), request.params.clone()).await,
            (None, method) => Err(ErrorObject::method_not_found(method)),
        };
        let response = match outcome {
            Ok(result) => Response::success(request.id.clone(), result),
            Err(error) => Response::error(Some(request.id.clone()), error),
        };
        if let Err(e) = self.post(&Message::Response(response)).await {
            tracing::warn!(method = %request.method, "could not answer the server's request: {e}");
        }
    }
}

/// The session's server-to-client stream, from [`Client::open_stream`].
#[derive(Debug)]
pub struct ServerStream {
    response: reqwest::Response,
    parser: SseParser,
    /// Events parsed from a chunk and not yet returned.
    ready: VecDeque<SseEvent>,
    last_event_id: Option<String>,
}

impl ServerStream {
    /// The next message; `Ok(None)` once the server has ended the stream.
    pub async fn next(&mut self) -> Result<Option<Message>, Error> {
        loop {
            while let Some(event) = self.ready.pop_front() {
                if event.id.is_some() {
                    self.last_event_id = event.id;
                }
                // An event without data primes the stream with an id to resume from.
                if event.data.is_empty() {
                    continue;
                }
                return Message::parse(event.data.as_bytes())
                    .map(Some)
                    .map_err(|e| Error::InvalidResponse(format!("event stream message: {e}")));
            }
            match self.response.chunk().await? {
                Some(chunk) => self.ready.extend(self.parser.push(&chunk)),
                None => return Ok(None),
            }
        }
    }

    /// The id of the last event received (to resume with `Last-Event-ID`).
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }
}

/// Whether a response's body is an SSE stream.
fn is_event_stream(resp: &reqwest::Response) -> bool {
    resp.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case(EVENT_STREAM))
        })
}

/// An HTTP error status with what its body says (the JSON-RPC error's message when it has one).
fn status_error(status: StatusCode, body: &[u8]) -> Error {
    let rpc = match Message::parse(body) {
        Ok(Message::Response(r)) => r.as_error().cloned(),
        _ => None,
    };
    let text = match &rpc {
        Some(e) => e.message.clone(),
        None => String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
    };
    Error::Status {
        status: status.as_u16(),
        body: text,
        rpc,
    }
}

/// The text blocks of a tool result joined by newlines (what a person wants to read).
pub fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|b| b.as_text())
        .collect::<Vec<_>>()
        .join("\n")
}
