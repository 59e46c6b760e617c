//! [`Client`]: one connection to one MCP endpoint.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use mcp_protocol::jsonrpc::{Message, Notification, Outcome, Request, RequestId};
use mcp_protocol::mcp::lifecycle::{
    ClientCapabilities, Implementation, InitializeParams, InitializeResult,
};
use mcp_protocol::mcp::methods;
use mcp_protocol::mcp::prompts::{GetPromptResult, ListPromptsResult, Prompt};
use mcp_protocol::mcp::resources::{ListResourcesResult, ReadResourceResult, Resource};
use mcp_protocol::mcp::tools::{CallToolResult, ListToolsResult, Tool};
use mcp_protocol::version;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::Error;

/// The header that carries a client session id.
pub const SESSION_HEADER: &str = "Mcp-Session-Id";

/// How to connect.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Longest wait for one answer; longer than the proxy's request timeout (300 s) by default,
    /// so the proxy's own "request timeout" error is what the user sees.
    pub timeout: Duration,
    /// Sent as `Authorization: Bearer <token>` when set.
    pub token: Option<String>,
    /// The protocol version offered in `initialize`.
    pub protocol_version: String,
    /// Who this client says it is.
    pub client_info: Implementation,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(330),
            token: None,
            protocol_version: version::LATEST_HANDSHAKE.to_owned(),
            client_info: Implementation::new("mcp-client", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// A client of one MCP endpoint. Cheap to share: every method takes `&self`, so many calls
/// can be in flight at once.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    endpoint: reqwest::Url,
    options: ClientOptions,
    next_id: AtomicI64,
    /// The session id the server gave at `initialize`, sent back on every later request.
    session: Mutex<Option<String>>,
}

impl Client {
    /// A client for `url`: a proxy base URL (`http://host:9000`, which means its `/message`
    /// route) or a full endpoint URL (`http://host:9000/servers/alpha/message`).
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
        if endpoint.path() == "/" || endpoint.path().is_empty() {
            endpoint.set_path(mcp_protocol::wire::MESSAGE_PATH);
        }
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(token) = &options.token {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| invalid("the token is not a valid header value".into()))?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(options.timeout)
            .tcp_nodelay(true)
            .build()?;
        Ok(Client {
            http,
            endpoint,
            options,
            next_id: AtomicI64::new(1),
            session: Mutex::new(None),
        })
    }

    /// The endpoint every message is posted to.
    pub fn endpoint(&self) -> &str {
        self.endpoint.as_str()
    }

    /// The session id the server assigned, if any.
    pub fn session_id(&self) -> Option<String> {
        self.session.lock().expect("session lock").clone()
    }

    /// Starts the session: `initialize`, then `notifications/initialized`.
    pub async fn initialize(&self) -> Result<InitializeResult, Error> {
        let params = InitializeParams {
            protocol_version: self.options.protocol_version.clone(),
            capabilities: ClientCapabilities::default(),
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
        self.post(&message).await.map(|_| ())
    }

    /// Sends a request and returns its result, or the JSON-RPC error as [`Error::Rpc`].
    pub async fn request(&self, method: &str, params: Option<Value>) -> Result<Value, Error> {
        let id = RequestId::from(self.next_id.fetch_add(1, Ordering::Relaxed));
        let message = Message::Request(Request::new(id.clone(), method, params));
        let body = self
            .post(&message)
            .await?
            .ok_or_else(|| Error::InvalidResponse(format!("no body in the answer to {method}")))?;
        let response = match Message::parse(&body) {
            Ok(Message::Response(r)) => r,
            Ok(other) => {
                return Err(Error::InvalidResponse(format!(
                    "expected a response to {method}, got {}",
                    other.method().unwrap_or("something else")
                )))
            }
            Err(e) => return Err(Error::InvalidResponse(format!("answer to {method}: {e}"))),
        };
        if response.id.as_ref() != Some(&id) {
            return Err(Error::InvalidResponse(format!(
                "answer to request {id} carries id {}",
                response.id.map_or("null".to_owned(), |i| i.to_string())
            )));
        }
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

    /// Posts one message; returns the body of a 200, `None` for a 202.
    async fn post(&self, message: &Message) -> Result<Option<Vec<u8>>, Error> {
        let mut req = self
            .http
            .post(self.endpoint.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(message).expect("messages serialize"));
        if let Some(session) = self.session_id() {
            req = req.header(SESSION_HEADER, session);
        }
        let resp = req.send().await?;
        let status = resp.status();
        if let Some(session) = resp.headers().get(SESSION_HEADER) {
            if let Ok(session) = session.to_str() {
                *self.session.lock().expect("session lock") = Some(session.to_owned());
            }
        }
        let body = resp.bytes().await?;
        match status.as_u16() {
            200 => Ok(Some(body.to_vec())),
            202 | 204 => Ok(None),
            code => {
                let rpc = match Message::parse(&body) {
                    Ok(Message::Response(r)) => r.as_error().cloned(),
                    _ => None,
                };
                let text = match &rpc {
                    Some(e) => e.message.clone(),
                    None => String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
                };
                Err(Error::Status {
                    status: code,
                    body: text,
                    rpc,
                })
            }
        }
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
