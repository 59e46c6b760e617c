//! [`Client`]: one connection to one MCP endpoint.
//!
//! This file owns the connection (endpoint, transport, HTTP client), the session state that
//! `initialize` starts and [`Client::close`] ends, the MCP operations, and posting one message
//! and sorting its answer. The rest is in submodules, re-exported here:
//! - `options`: [`ClientOptions`], the [`Transport`] and the callbacks for what the server
//!   sends unasked ([`NotificationHandler`], [`RequestHandler`]).
//! - `stream`: event streams: an SSE answer read until its response (resumed with
//!   `Last-Event-ID` when it ends early), the session's GET stream ([`ServerStream`]), and the
//!   server's requests answered on either.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use mcp_protocol::jsonrpc::{Message, Notification, Outcome, Request, RequestId};
use mcp_protocol::mcp::lifecycle::{InitializeParams, InitializeResult};
use mcp_protocol::mcp::methods;
use mcp_protocol::mcp::prompts::{GetPromptResult, ListPromptsResult, Prompt};
use mcp_protocol::mcp::resources::{ListResourcesResult, ReadResourceResult, Resource};
use mcp_protocol::mcp::tools::{CallToolResult, ListToolsResult, Tool};
use mcp_protocol::streamable::{EVENT_STREAM, JSON, PROTOCOL_VERSION_HEADER, SESSION_ID_HEADER};
use mcp_protocol::version;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::Error;

mod options;
mod stream;

pub use options::{
    request_handler, BoxFuture, ClientOptions, NotificationHandler, RequestHandler, Transport,
};
pub use stream::ServerStream;

/// The path of the Streamable HTTP endpoint on a proxy or server base URL.
const MCP_PATH: &str = "/mcp";

/// The `Accept` header of a Streamable HTTP POST: the spec asks for both.
const ACCEPT_BOTH: &str = "application/json, text/event-stream";

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
